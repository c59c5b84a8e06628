/*
 * p11mux-bench - standalone PKCS#11 private-key operation benchmark.
 *
 * Loads a PKCS#11 module with dlopen(), logs in to one token, finds one
 * private key and then hammers it from N threads for T seconds.  Every
 * operation is done the way NSS does it for a private key operation:
 *
 *     C_OpenSession -> C_SignInit/C_DecryptInit -> C_Sign/C_Decrypt
 *                   -> C_CloseSession
 *
 * The main thread keeps its own logged-in session open for the whole run,
 * so that closing the last worker session never logs the token out.
 *
 * Build (standalone):
 *   gcc -std=gnu11 -Wall -Wextra -O2 -I/usr/include/p11-kit-1 \
 *       tools/p11mux-bench.c -o p11mux-bench -ldl -lpthread -lm
 *
 * Exit status: 0 = ops > 0 and no errors, 1 = errors during the run (or no
 * operation completed), 2 = usage or setup error.
 */

#define _GNU_SOURCE 1

#include <dlfcn.h>
#include <stddef.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "log.h"    /* p11mux_rv_name */
#include "thread.h" /* p11mux_now_ns */

#define PROG "p11mux-bench"

#define EXIT_OK_RUN     0
#define EXIT_RUN_ERRORS 1
#define EXIT_SETUP      2

#define OUT_BUF_LEN 1024u /* output buffer for C_Sign / C_Decrypt */
#define MSG_LEN     32u   /* hash / plaintext size */
#define MAX_THREADS 4096
#define MAX_SECONDS 86400.0

/* "CKR_PIN_INCORRECT 0xa0" */
static const char *
rv_str(CK_RV rv, char *buf, size_t len)
{
	snprintf(buf, len, "%s 0x%lx", p11mux_rv_name(rv), (unsigned long)rv);
	return buf;
}

static void
fail_rv(const char *what, CK_RV rv)
{
	char b[96];
	fprintf(stderr, PROG ": %s failed: %s\n", what, rv_str(rv, b, sizeof(b)));
}

/* ------------------------------------------------------------------ */
/* Configuration / shared benchmark state                              */
/* ------------------------------------------------------------------ */

enum op_kind { OP_SIGN, OP_DECRYPT };
enum mech_kind { MECH_RSA_PKCS, MECH_RSA_PSS, MECH_ECDSA, MECH_RSA_X509 };

static const char *const mech_arg_names[] = {
        [MECH_RSA_PKCS] = "rsa-pkcs",
        [MECH_RSA_PSS] = "rsa-pss",
        [MECH_ECDSA] = "ecdsa",
        [MECH_RSA_X509] = "rsa-x509",
};

struct options {
	const char *module;
	const char *init_args;
	const char *token;
	bool have_slot;
	CK_SLOT_ID slot;
	char *pin;                      /* owned */
	const char *pin_arg, *pin_file; /* as given */
	const char *key_label;
	unsigned char *key_id; /* owned */
	size_t key_id_len;
	enum op_kind op;
	bool have_op;
	enum mech_kind mech;
	bool have_mech;
	long threads;
	double seconds;
	double grace; /* how long past the end to wait for operations still in flight */
	const char *name;
	bool json;
	bool verbose;
	bool keep_session; /* one session per thread instead of one per operation */
};

struct bench {
	CK_FUNCTION_LIST_PTR f;
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE key;
	enum op_kind op;
	CK_MECHANISM_TYPE mech_type;
	bool use_pss;
	bool keep_session;

	/* input: data to sign, or ciphertext to decrypt */
	unsigned char *input;
	size_t input_len;

	/* for decrypt rsa-pkcs: expected plaintext */
	bool check_plain;
	unsigned char plain[MSG_LEN];

	/* start gate */
	pthread_mutex_t gate_mu;
	pthread_cond_t gate_cv;
	int gate; /* 0 = wait, 1 = go, -1 = abort */
	uint64_t start_ns;
	uint64_t deadline_ns;
};

struct worker {
	pthread_t tid;
	struct bench *b;
	/* Protects the results below: the main thread reads them while a stuck worker may still
	 * be writing (it is not joined). */
	pthread_mutex_t mu;
	uint64_t *lat; /* per-op latency in ns (successful ops) */
	size_t n, cap;
	uint64_t errors;
	bool have_err;
	bool first_mismatch; /* first error was a plaintext mismatch */
	bool stuck;          /* still inside an operation when the benchmark gave up */
	CK_RV first_rv;
	uint64_t first_err_ns;
	bool oom;
};

/* ------------------------------------------------------------------ */
/* One benchmark operation                                             */
/* ------------------------------------------------------------------ */

/*
 * Returns CKR_OK on success; *mismatch is set when a decrypt succeeded but
 * returned the wrong plaintext.  in/out are per-thread buffers.
 */
static CK_RV
do_one_op(const struct bench *b, CK_SESSION_HANDLE kept, unsigned char *in, size_t in_len,
          unsigned char *out, bool *mismatch)
{
	CK_FUNCTION_LIST_PTR f = b->f;
	CK_SESSION_HANDLE s = kept;
	CK_RSA_PKCS_PSS_PARAMS pss = {
	        .hashAlg = CKM_SHA256,
	        .mgf = CKG_MGF1_SHA256,
	        .sLen = 32,
	};
	CK_MECHANISM mech = {b->mech_type, NULL, 0};
	CK_ULONG out_len = OUT_BUF_LEN;
	CK_RV rv, rv2;

	*mismatch = false;
	if (b->use_pss) {
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	}

	if (kept == CK_INVALID_HANDLE &&
	    (rv = f->C_OpenSession(b->slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		return rv;

	if (b->op == OP_SIGN) {
		rv = f->C_SignInit(s, &mech, b->key);
		if (rv == CKR_OK)
			rv = f->C_Sign(s, in, in_len, out, &out_len);
	} else {
		rv = f->C_DecryptInit(s, &mech, b->key);
		if (rv == CKR_OK)
			rv = f->C_Decrypt(s, in, in_len, out, &out_len);
		if (rv == CKR_OK && b->check_plain &&
		    (out_len != MSG_LEN || memcmp(out, b->plain, MSG_LEN) != 0))
			*mismatch = true;
	}

	if (kept != CK_INVALID_HANDLE)
		return rv;
	rv2 = f->C_CloseSession(s);
	if (rv == CKR_OK)
		rv = rv2;
	return rv;
}

static void
worker_note_error(struct worker *w, CK_RV rv, bool mismatch, uint64_t t)
{
	pthread_mutex_lock(&w->mu);
	w->errors++;
	if (!w->have_err) {
		w->have_err = true;
		w->first_rv = rv;
		w->first_mismatch = mismatch;
		w->first_err_ns = t;
	}
	pthread_mutex_unlock(&w->mu);
}

/* Records a successful operation's latency. false when out of memory. */
static bool
worker_note_latency(struct worker *w, uint64_t ns)
{
	bool ok = true;

	pthread_mutex_lock(&w->mu);
	if (w->n == w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 4096;
		uint64_t *nl = realloc(w->lat, ncap * sizeof(*nl));

		if (nl == NULL) {
			w->oom = true;
			ok = false;
		} else {
			w->lat = nl;
			w->cap = ncap;
		}
	}
	if (ok)
		w->lat[w->n++] = ns;
	pthread_mutex_unlock(&w->mu);
	return ok;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	unsigned char out[OUT_BUF_LEN];
	unsigned char *in;
	CK_SESSION_HANDLE kept = CK_INVALID_HANDLE;
	uint64_t deadline;
	int gate;

	/* private copy of the input: modules get a non-const pointer */
	in = malloc(b->input_len);
	if (in)
		memcpy(in, b->input, b->input_len);

	pthread_mutex_lock(&b->gate_mu);
	while (b->gate == 0)
		pthread_cond_wait(&b->gate_cv, &b->gate_mu);
	gate = b->gate;
	deadline = b->deadline_ns;
	pthread_mutex_unlock(&b->gate_mu);

	if (gate < 0 || in == NULL) {
		pthread_mutex_lock(&w->mu);
		w->oom = in == NULL;
		pthread_mutex_unlock(&w->mu);
		free(in);
		return NULL;
	}

	for (;;) {
		uint64_t t0 = p11mux_now_ns();
		if (t0 >= deadline)
			break;
		bool mismatch = false;
		CK_RV rv;

		if (kept == CK_INVALID_HANDLE && b->keep_session &&
		    (rv = b->f->C_OpenSession(b->slot, CKF_SERIAL_SESSION, NULL, NULL, &kept)) !=
		            CKR_OK) {
			kept = CK_INVALID_HANDLE;
			worker_note_error(w, rv, false, p11mux_now_ns());
			continue;
		}
		rv = do_one_op(b, kept, in, b->input_len, out, &mismatch);
		uint64_t t1 = p11mux_now_ns();

		if (rv != CKR_OK || mismatch) {
			worker_note_error(w, rv, mismatch, t1);
			continue;
		}
		if (!worker_note_latency(w, t1 - t0))
			break;
	}

	if (kept != CK_INVALID_HANDLE)
		b->f->C_CloseSession(kept);
	free(in);
	return NULL;
}

/* Sums the workers' results: *total operations with their latencies in *all (malloc'ed),
 * *errors (a stuck worker counts one more), *oom, and *first, the worker whose error came
 * first (NULL: none). A stuck worker may still be writing: each is read under its lock, and
 * only the operations counted here are copied. 0, or -1 when out of memory. */
static int
merge_results(struct worker *workers, long n, uint64_t **all, size_t *total, uint64_t *errors,
              bool *oom, const struct worker **first)
{
	size_t *counted = calloc((size_t)n + 1, sizeof(*counted)), k = 0;

	*all = NULL;
	*total = 0;
	for (long i = 0; i < n && counted != NULL; i++) {
		struct worker *w = &workers[i];

		pthread_mutex_lock(&w->mu);
		counted[i] = w->n;
		*total += w->n;
		*errors += w->errors + (w->stuck ? 1 : 0);
		*oom = *oom || w->oom;
		if (w->have_err && (*first == NULL || w->first_err_ns < (*first)->first_err_ns))
			*first = w;
		pthread_mutex_unlock(&w->mu);
	}
	if (counted == NULL || (*all = malloc((*total ? *total : 1) * sizeof(**all))) == NULL) {
		free(counted);
		return -1;
	}
	for (long i = 0; i < n; i++) {
		pthread_mutex_lock(&workers[i].mu);
		if (counted[i] > 0)
			memcpy(*all + k, workers[i].lat, counted[i] * sizeof(**all));
		pthread_mutex_unlock(&workers[i].mu);
		k += counted[i];
	}
	free(counted);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Option parsing                                                      */
/* ------------------------------------------------------------------ */

static void
usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: " PROG " --module PATH [--init-args STRING]\n"
	        "                    [--token LABEL | --slot ID]\n"
	        "                    (--pin PIN | --pin-file FILE)\n"
	        "                    (--key-label LABEL | --key-id HEX)\n"
	        "                    --op sign|decrypt --mech rsa-pkcs|rsa-pss|ecdsa|rsa-x509\n"
	        "                    [--threads N] [--seconds T] [--grace T] [--name NAME]\n"
	        "                    [--keep-session] [--json] [--verbose]\n"
	        "\n"
	        "Benchmark private-key operations of a PKCS#11 module.  Each operation is\n"
	        "C_OpenSession, C_SignInit/C_DecryptInit, C_Sign/C_Decrypt, C_CloseSession\n"
	        "(the NSS pattern); the main thread keeps a logged-in session open.\n"
	        "\n"
	        "Options:\n"
	        "  --module PATH      PKCS#11 module to dlopen (required)\n"
	        "  --init-args STR    passed as CK_C_INITIALIZE_ARGS.pReserved (NSS-style\n"
	        "                     library parameters); NULL when not given\n"
	        "  --token LABEL      select the token by label (trailing spaces ignored)\n"
	        "  --slot ID          select the slot by id (decimal or 0x-hex)\n"
	        "                     (default: the only initialized token present)\n"
	        "  --pin PIN          user PIN\n"
	        "  --pin-file FILE    read the user PIN from FILE: a mod_nss PIN file (the line\n"
	        "                     \"LABEL:PIN\" of --token's label, or the first such line),\n"
	        "                     or a bare PIN on its first line\n"
	        "  --key-label LABEL  private key CKA_LABEL\n"
	        "  --key-id HEX       private key CKA_ID in hex (':' separators allowed)\n"
	        "  --op OP            sign | decrypt\n"
	        "  --mech MECH        sign:    rsa-pkcs (SHA-256 DigestInfo, CKM_RSA_PKCS)\n"
	        "                              rsa-pss  (CKM_RSA_PKCS_PSS, SHA-256, sLen 32)\n"
	        "                              ecdsa    (CKM_ECDSA over 32 bytes)\n"
	        "                              rsa-x509 (CKM_RSA_X_509, modulus-sized input)\n"
	        "                     decrypt: rsa-pkcs (ciphertext made once with the public\n"
	        "                                        key; plaintext checked every op)\n"
	        "                              rsa-x509 (CKM_RSA_X_509, modulus-sized input)\n"
	        "  --threads N        worker threads (default 1)\n"
	        "  --seconds T        run time in seconds, fractions allowed (default 10)\n"
	        "  --grace T          seconds to wait past the end for operations still in\n"
	        "                     flight (default 10); those that do not return by then\n"
	        "                     are reported as stuck, counted as errors, and the\n"
	        "                     module is left without C_Finalize\n"
	        "  --keep-session     one session per thread, kept for the whole run, instead\n"
	        "                     of NSS's session per operation: the module's own cost\n"
	        "                     of opening and closing sessions is left out\n"
	        "  --name NAME        result label (default: module file basename)\n"
	        "  --json             print one JSON object instead of the text line\n"
	        "  --verbose          print setup details to stderr\n"
	        "  --help             show this help\n"
	        "\n"
	        "Output: NAME: threads=N seconds=S ops=N ops/s=N p50=Xms p95=Xms p99=Xms errors=N\n"
	        "Exit status: 0 ops>0 and no errors, 1 errors (or no ops), 2 usage/setup error.\n");
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses "0a1b", "0x0a1b" or "0a:1b". Returns malloc'd bytes or NULL. */
static unsigned char *
parse_hex(const char *s, size_t *out_len)
{
	size_t slen = strlen(s), n = 0;
	unsigned char *buf;
	int hi = -1;

	if (slen >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2, slen -= 2;
	buf = malloc(slen / 2 + 1);
	if (buf == NULL)
		return NULL;
	for (; *s; s++) {
		if (*s == ':' || *s == ' ') {
			if (hi >= 0)
				goto bad;
			continue;
		}
		int v = hexval((unsigned char)*s);
		if (v < 0)
			goto bad;
		if (hi < 0) {
			hi = v;
		} else {
			buf[n++] = (unsigned char)(hi << 4 | v);
			hi = -1;
		}
	}
	if (hi >= 0 || n == 0)
		goto bad;
	*out_len = n;
	return buf;
bad:
	free(buf);
	return NULL;
}

/* The PIN in a line "LABEL:PIN" of a mod_nss PIN file (p11muxd's pin_file) for the token
 * label (any label when NULL), moved to the line's start; NULL when the line does not match. */
static char *
pin_of_line(char *line, const char *label)
{
	char *colon = strchr(line, ':');
	size_t n;

	if (colon == NULL)
		return NULL;
	n = (size_t)(colon - line);
	if (label != NULL && (strlen(label) != n || strncmp(line, label, n) != 0))
		return NULL;
	memmove(line, colon + 1, strlen(colon + 1) + 1);
	return line;
}

/* The user PIN from path: the PIN of the line "LABEL:PIN" for the token's label (the first
 * such line without --token), as mod_nss and p11muxd read the file; or the first line, when
 * it has no ':' (a bare PIN). */
static char *
read_pin_file(const char *path, const char *label)
{
	FILE *fp = fopen(path, "r");
	char *line = NULL, *found = NULL;
	size_t cap = 0, lines = 0;
	ssize_t len;

	if (fp == NULL) {
		fprintf(stderr, PROG ": cannot open PIN file %s: %s\n", path, strerror(errno));
		return NULL;
	}
	while (found == NULL && (len = getline(&line, &cap, fp)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (lines++ == 0 && strchr(line, ':') == NULL)
			found = line; /* a bare PIN */
		else if (pin_of_line(line, label) != NULL)
			found = line;
	}
	fclose(fp);
	if (found == NULL && lines > 0) {
		fprintf(stderr, PROG ": %s has no line \"%s:PIN\"\n", path,
		        label != NULL ? label : "LABEL");
		free(line);
		return NULL;
	}
	if (found == NULL) {
		free(line);
		if ((found = strdup("")) == NULL) /* empty file: empty PIN */
			fprintf(stderr, PROG ": out of memory\n");
	}
	return found;
}

static void
free_options(struct options *o)
{
	if (o->pin) {
		explicit_bzero(o->pin, strlen(o->pin));
		free(o->pin);
	}
	free(o->key_id);
	o->pin = NULL;
	o->key_id = NULL;
}

/* The options, and where each one's value goes (an offset in struct options). */
enum opt_kind {
	OPT_STRING, /* const char * */
	OPT_FLAG,   /* bool */
	OPT_SLOT,   /* CK_SLOT_ID, with have_slot */
	OPT_HEX,    /* key_id, key_id_len */
	OPT_OP,     /* enum op_kind, with have_op */
	OPT_MECH,   /* enum mech_kind, with have_mech */
	OPT_COUNT,  /* long, 1..MAX_THREADS */
	OPT_TIME,   /* double, 0 < T <= MAX_SECONDS */
	OPT_GRACE,  /* double, 0 <= T <= MAX_SECONDS */
	OPT_HELP,
};

#define STR(x)  #x
#define XSTR(x) STR(x)

static const struct optdef {
	const char *name;
	enum opt_kind kind;
	size_t field;
	const char *want; /* the error message's hint */
} optdefs[] = {
        {"module", OPT_STRING, offsetof(struct options, module), ""},
        {"init-args", OPT_STRING, offsetof(struct options, init_args), ""},
        {"token", OPT_STRING, offsetof(struct options, token), ""},
        {"slot", OPT_SLOT, offsetof(struct options, slot), ""},
        {"pin", OPT_STRING, offsetof(struct options, pin_arg), ""},
        {"pin-file", OPT_STRING, offsetof(struct options, pin_file), ""},
        {"key-label", OPT_STRING, offsetof(struct options, key_label), ""},
        {"key-id", OPT_HEX, offsetof(struct options, key_id), " (want hex)"},
        {"op", OPT_OP, offsetof(struct options, op), " (sign|decrypt)"},
        {"mech", OPT_MECH, offsetof(struct options, mech), " (rsa-pkcs|rsa-pss|ecdsa|rsa-x509)"},
        {"threads", OPT_COUNT, offsetof(struct options, threads), " (1.." XSTR(MAX_THREADS) ")"},
        {"seconds", OPT_TIME, offsetof(struct options, seconds), " (0 < T <= 86400)"},
        {"grace", OPT_GRACE, offsetof(struct options, grace), " (0 <= T <= 86400)"},
        {"name", OPT_STRING, offsetof(struct options, name), ""},
        {"json", OPT_FLAG, offsetof(struct options, json), ""},
        {"verbose", OPT_FLAG, offsetof(struct options, verbose), ""},
        {"keep-session", OPT_FLAG, offsetof(struct options, keep_session), ""},
        {"help", OPT_HELP, 0, ""},
};
#define NOPTDEFS (sizeof(optdefs) / sizeof(optdefs[0]))

/* A number: the whole string, no sign for the unsigned ones. */
static bool
parse_number(const char *arg, const struct optdef *d, void *dst)
{
	unsigned long long u;
	double t;
	long n;
	char *end;

	errno = 0;
	switch (d->kind) {
	case OPT_SLOT:
		u = strtoull(arg, &end, 0);
		if (errno || end == arg || *end || arg[0] == '-' || u > ULONG_MAX)
			return false;
		*(CK_SLOT_ID *)dst = (CK_SLOT_ID)u;
		return true;
	case OPT_COUNT:
		n = strtol(arg, &end, 10);
		if (errno || end == arg || *end || n < 1 || n > MAX_THREADS)
			return false;
		*(long *)dst = n;
		return true;
	default:
		t = strtod(arg, &end);
		if (errno || end == arg || *end || t > MAX_SECONDS ||
		    (d->kind == OPT_TIME ? !(t > 0.0) : !(t >= 0.0)))
			return false;
		*(double *)dst = t;
		return true;
	}
}

/* Stores one option's value. true, or false when it is not valid. */
static bool
set_option(struct options *o, const struct optdef *d, const char *arg)
{
	void *dst = (char *)o + d->field;
	size_t i;

	switch (d->kind) {
	case OPT_STRING:
		*(const char **)dst = arg;
		return true;
	case OPT_FLAG:
		*(bool *)dst = true;
		return true;
	case OPT_HEX:
		free(o->key_id);
		return (o->key_id = parse_hex(arg, &o->key_id_len)) != NULL;
	case OPT_OP:
		o->have_op = true;
		o->op = strcmp(arg, "decrypt") == 0 ? OP_DECRYPT : OP_SIGN;
		return strcmp(arg, "sign") == 0 || strcmp(arg, "decrypt") == 0;
	case OPT_MECH:
		for (i = 0; i < sizeof(mech_arg_names) / sizeof(mech_arg_names[0]); i++)
			if (strcmp(arg, mech_arg_names[i]) == 0) {
				o->mech = (enum mech_kind)i;
				o->have_mech = true;
				return true;
			}
		return false;
	case OPT_SLOT:
		o->have_slot = true;
		return parse_number(arg, d, dst);
	default:
		return parse_number(arg, d, dst);
	}
}

/* What the options must say together; then the PIN (read from --pin-file) and the name.
 * -1 to go on, else an exit status. */
static int
check_options(struct options *o)
{
	const struct {
		bool bad;
		const char *msg;
	} checks[] = {
	        {!o->module, "--module is required"},
	        {o->token && o->have_slot, "use only one of --token and --slot"},
	        {!o->pin_arg && !o->pin_file, "--pin or --pin-file is required"},
	        {o->pin_arg && o->pin_file, "use only one of --pin and --pin-file"},
	        {!o->key_label && !o->key_id, "--key-label or --key-id is required"},
	        {o->key_label && o->key_id, "use only one of --key-label and --key-id"},
	        {!o->have_op, "--op is required"},
	        {!o->have_mech, "--mech is required"},
	        {o->op == OP_DECRYPT && (o->mech == MECH_RSA_PSS || o->mech == MECH_ECDSA),
	         "--op decrypt supports only --mech rsa-pkcs or rsa-x509"},
	};
	const char *slash;

	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
		if (checks[i].bad) {
			fprintf(stderr, PROG ": %s\nTry '" PROG " --help'.\n", checks[i].msg);
			return EXIT_SETUP;
		}
	o->pin = o->pin_file ? read_pin_file(o->pin_file, o->token) : strdup(o->pin_arg);
	if (o->pin == NULL) {
		if (!o->pin_file)
			fprintf(stderr, PROG ": out of memory\n");
		return EXIT_SETUP;
	}
	if (o->name == NULL) {
		slash = strrchr(o->module, '/');
		o->name = slash ? slash + 1 : o->module;
	}
	return -1;
}

/* Returns -1 to continue, otherwise an exit status. */
static int
parse_options(int argc, char **argv, struct options *o)
{
	struct option longopts[NOPTDEFS + 1];
	int c, idx;

	memset(longopts, 0, sizeof(longopts));
	for (size_t i = 0; i < NOPTDEFS; i++) {
		longopts[i].name = optdefs[i].name;
		longopts[i].has_arg = optdefs[i].kind == OPT_FLAG || optdefs[i].kind == OPT_HELP
		                              ? no_argument
		                              : required_argument;
		longopts[i].val = 256 + (int)i;
	}
	o->threads = 1;
	o->seconds = 10.0;
	o->grace = 10.0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		const struct optdef *d = c >= 256 ? &optdefs[c - 256] : NULL;

		if (c == 'h' || (d != NULL && d->kind == OPT_HELP)) {
			usage(stdout);
			return EXIT_OK_RUN;
		}
		if (d == NULL) {
			if (optopt > 0 && optopt < 256)
				fprintf(stderr, PROG ": bad or incomplete option '-%c'\n", optopt);
			else
				fprintf(stderr, PROG ": bad or incomplete option '%s'\n",
				        argv[optind - 1]);
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return EXIT_SETUP;
		}
		if (!set_option(o, d, optarg)) {
			fprintf(stderr, PROG ": invalid --%s '%s'%s\n", d->name, optarg, d->want);
			return EXIT_SETUP;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return EXIT_SETUP;
	}
	return check_options(o);
}

/* ------------------------------------------------------------------ */
/* Setup helpers                                                       */
/* ------------------------------------------------------------------ */

static size_t
trimmed_len(const unsigned char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0'))
		n--;
	return n;
}

static void
print_label(FILE *fp, const unsigned char *label)
{
	fprintf(fp, "%.*s", (int)trimmed_len(label, 32), (const char *)label);
}

/* Returns 0 and sets *slot, or -1 after printing a message. */
static int
find_slot(CK_FUNCTION_LIST_PTR f, const struct options *o, CK_SLOT_ID *slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_TOKEN_INFO ti;
	CK_RV rv;
	int ret = -1;

	if (o->have_slot) {
		rv = f->C_GetTokenInfo(o->slot, &ti);
		if (rv != CKR_OK) {
			char what[64];
			snprintf(what, sizeof(what), "C_GetTokenInfo(slot %lu)",
			         (unsigned long)o->slot);
			fail_rv(what, rv);
			return -1;
		}
		*slot = o->slot;
		return 0;
	}

	for (;;) {
		rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
		if (rv != CKR_OK) {
			fail_rv("C_GetSlotList", rv);
			return -1;
		}
		if (n == 0) {
			fprintf(stderr, PROG ": module reports no slot with a token\n");
			return -1;
		}
		free(slots);
		slots = calloc(n, sizeof(*slots));
		if (slots == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			return -1;
		}
		rv = f->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv == CKR_BUFFER_TOO_SMALL)
			continue;
		if (rv != CKR_OK) {
			fail_rv("C_GetSlotList", rv);
			goto out;
		}
		break;
	}

	{
		size_t want_len = o->token ? strlen(o->token) : 0;
		CK_ULONG found = 0;

		if (o->token)
			want_len = trimmed_len((const unsigned char *)o->token, want_len);
		for (CK_ULONG i = 0; i < n; i++) {
			rv = f->C_GetTokenInfo(slots[i], &ti);
			if (rv != CKR_OK)
				continue;
			if (o->token) {
				size_t l = trimmed_len(ti.label, sizeof(ti.label));
				if (l == want_len && memcmp(ti.label, o->token, l) == 0) {
					*slot = slots[i];
					ret = 0;
					goto out;
				}
			} else if (ti.flags & CKF_TOKEN_INITIALIZED) {
				if (found++ == 0)
					*slot = slots[i];
			}
		}
		if (o->token) {
			fprintf(stderr, PROG ": no token with label '%s' found; tokens:\n",
			        o->token);
		} else if (found == 1) {
			ret = 0;
			goto out;
		} else {
			fprintf(stderr,
			        PROG ": %s initialized token; pick one with "
			             "--token or --slot; tokens:\n",
			        found ? "more than one" : "no");
		}
		for (CK_ULONG i = 0; i < n; i++) {
			if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
				continue;
			fprintf(stderr, "  slot %lu: '", (unsigned long)slots[i]);
			print_label(stderr, ti.label);
			fprintf(stderr, "'%s\n",
			        (ti.flags & CKF_TOKEN_INITIALIZED) ? "" : " (not initialized)");
		}
	}
out:
	free(slots);
	return ret;
}

/* Find one object; returns CKR_OK with *found=0 if none. */
static CK_RV
find_object(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl,
            CK_OBJECT_HANDLE *obj, CK_ULONG *found)
{
	CK_OBJECT_HANDLE h[2];
	CK_RV rv, rv2;

	*found = 0;
	rv = f->C_FindObjectsInit(s, tmpl, ntmpl);
	if (rv != CKR_OK)
		return rv;
	rv = f->C_FindObjects(s, h, 2, found);
	rv2 = f->C_FindObjectsFinal(s);
	if (rv == CKR_OK)
		rv = rv2;
	if (rv == CKR_OK && *found > 0)
		*obj = h[0];
	return rv;
}

/* Reads a variable-length attribute into a malloc'd buffer. */
static CK_RV
get_attr_alloc(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
               CK_ATTRIBUTE_TYPE type, unsigned char **val, CK_ULONG *len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv;

	*val = NULL;
	*len = 0;
	rv = f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == (CK_ULONG)-1)
		return CKR_ATTRIBUTE_TYPE_INVALID;
	if (a.ulValueLen == 0)
		return CKR_OK;
	a.pValue = malloc(a.ulValueLen);
	if (a.pValue == NULL)
		return CKR_HOST_MEMORY;
	rv = f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	*val = a.pValue;
	*len = a.ulValueLen;
	return CKR_OK;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted array */
static uint64_t
percentile(const uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	double r = ceil(p / 100.0 * (double)n);
	size_t idx = r < 1.0 ? 0 : (size_t)r - 1;
	if (idx >= n)
		idx = n - 1;
	return v[idx];
}

static void
json_string(FILE *fp, const char *s)
{
	fputc('"', fp);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(fp, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", fp);
		else if (ch == '\t')
			fputs("\\t", fp);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(fp, "\\u%04x", ch);
		else
			fputc(ch, fp);
	}
	fputc('"', fp);
}

static void
print_hex(FILE *fp, const unsigned char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "%02x", v[i]);
}

static const char *
mech_ck_name(CK_MECHANISM_TYPE m)
{
	switch (m) {
	case CKM_RSA_PKCS:
		return "CKM_RSA_PKCS";
	case CKM_RSA_PKCS_PSS:
		return "CKM_RSA_PKCS_PSS";
	case CKM_ECDSA:
		return "CKM_ECDSA";
	case CKM_RSA_X_509:
		return "CKM_RSA_X_509";
	default:
		return "?";
	}
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

/* Everything main() sets up, in the order it does, and tears down in cleanup(). */
struct run {
	struct options o;
	struct bench b;
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SESSION_HANDLE main_s;
	bool initialized, logged_in, gate_init;
	CK_KEY_TYPE key_type;
	unsigned char *modulus, *key_id;
	CK_ULONG modulus_len, key_id_len;
	CK_OBJECT_HANDLE pub;
	unsigned char msg[MSG_LEN];
	struct worker *workers;
	long created, stuck;
	double elapsed;
};

/* dlopen, C_GetFunctionList, C_Initialize. 0 or -1 (after a message). */
static int
load_module(struct run *r)
{
	CK_C_GetFunctionList get_fl;
	CK_C_INITIALIZE_ARGS init_args;
	CK_RV rv;

	dlerror();
	if ((r->dl = dlopen(r->o.module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		const char *e = dlerror();
		fprintf(stderr, PROG ": dlopen(%s) failed: %s\n", r->o.module,
		        e ? e : "unknown error");
		return -1;
	}
	*(void **)&get_fl = dlsym(r->dl, "C_GetFunctionList");
	if (get_fl == NULL) {
		fprintf(stderr, PROG ": %s has no C_GetFunctionList symbol\n", r->o.module);
		return -1;
	}
	rv = get_fl(&r->f);
	if (rv != CKR_OK || r->f == NULL) {
		fail_rv("C_GetFunctionList", rv != CKR_OK ? rv : CKR_GENERAL_ERROR);
		r->f = NULL;
		return -1;
	}
	memset(&init_args, 0, sizeof(init_args));
	init_args.flags = CKF_OS_LOCKING_OK;
	init_args.pReserved = (void *)r->o.init_args; /* NULL unless given */
	rv = r->f->C_Initialize(&init_args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		fail_rv(r->o.init_args ? "C_Initialize (with --init-args as pReserved; "
		                         "the module may not accept library parameters)"
		                       : "C_Initialize",
		        rv);
		return -1;
	}
	r->initialized = (rv == CKR_OK);
	return 0;
}

/* The slot, a session kept for the setup, the login. 0 or -1. */
static int
open_and_login(struct run *r)
{
	CK_RV rv;

	if (find_slot(r->f, &r->o, &r->b.slot) != 0)
		return -1;
	rv = r->f->C_OpenSession(r->b.slot, CKF_SERIAL_SESSION, NULL, NULL, &r->main_s);
	if (rv != CKR_OK) {
		fail_rv("C_OpenSession", rv);
		return -1;
	}
	rv = r->f->C_Login(r->main_s, CKU_USER, (unsigned char *)r->o.pin, strlen(r->o.pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		fail_rv("C_Login(CKU_USER)", rv);
		return -1;
	}
	r->logged_in = (rv == CKR_OK);
	return 0;
}

/* The private key named by --key-label or --key-id, and its type, which must suit --mech.
 * 0 or -1. */
static int
find_private_key(struct run *r)
{
	const struct options *o = &r->o;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, NULL, 0}};
	CK_ATTRIBUTE kt = {CKA_KEY_TYPE, &r->key_type, sizeof(r->key_type)};
	CK_ULONG found;
	CK_RV rv;

	if (o->key_label) {
		tmpl[1].pValue = (void *)o->key_label;
		tmpl[1].ulValueLen = strlen(o->key_label);
	} else {
		tmpl[1].type = CKA_ID;
		tmpl[1].pValue = o->key_id;
		tmpl[1].ulValueLen = o->key_id_len;
	}
	if ((rv = find_object(r->f, r->main_s, tmpl, 2, &r->b.key, &found)) != CKR_OK) {
		fail_rv("private key search (C_FindObjects*)", rv);
		return -1;
	}
	if (found == 0) {
		fprintf(stderr, PROG ": no private key with ");
		if (o->key_label) {
			fprintf(stderr, "CKA_LABEL '%s'", o->key_label);
		} else {
			fprintf(stderr, "CKA_ID ");
			print_hex(stderr, o->key_id, o->key_id_len);
		}
		fprintf(stderr, " found on the token (or not visible after login)\n");
		return -1;
	}
	if (found > 1)
		fprintf(stderr, PROG ": warning: several private keys match; using the first\n");
	if ((rv = r->f->C_GetAttributeValue(r->main_s, r->b.key, &kt, 1)) != CKR_OK) {
		fail_rv("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
		return -1;
	}
	if ((o->mech == MECH_ECDSA) != (r->key_type == CKK_EC) ||
	    (o->mech != MECH_ECDSA && r->key_type != CKK_RSA)) {
		fprintf(stderr,
		        PROG
		        ": --mech %s needs an %s key, but the key's CKA_KEY_TYPE is %s 0x%lx\n",
		        mech_arg_names[o->mech], o->mech == MECH_ECDSA ? "EC" : "RSA",
		        r->key_type == CKK_RSA  ? "CKK_RSA"
		        : r->key_type == CKK_EC ? "CKK_EC"
		                                : "other",
		        (unsigned long)r->key_type);
		return -1;
	}
	return 0;
}

/* The public key with the private key's CKA_ID (or label). 0 or -1. */
static int
find_public_key(struct run *r)
{
	const struct options *o = &r->o;
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, r->key_id, r->key_id_len}};
	CK_ULONG found = 0;
	CK_RV rv;

	if (r->key_id_len == 0 && o->key_label) {
		tmpl[1].type = CKA_LABEL;
		tmpl[1].pValue = (void *)o->key_label;
		tmpl[1].ulValueLen = strlen(o->key_label);
	}
	if ((rv = find_object(r->f, r->main_s, tmpl, 2, &r->pub, &found)) != CKR_OK) {
		fail_rv("public key search (C_FindObjects*)", rv);
		return -1;
	}
	if (found == 0) {
		fprintf(stderr,
		        PROG ": no public key with the private key's %s found (needed for --op %s "
		             "--mech %s)\n",
		        r->key_id_len ? "CKA_ID" : "CKA_LABEL",
		        o->op == OP_SIGN ? "sign" : "decrypt", mech_arg_names[o->mech]);
		return -1;
	}
	if (r->modulus_len == 0) {
		free(r->modulus);
		r->modulus = NULL;
		rv = get_attr_alloc(r->f, r->main_s, r->pub, CKA_MODULUS, &r->modulus,
		                    &r->modulus_len);
		if (rv != CKR_OK) {
			fail_rv("C_GetAttributeValue(CKA_MODULUS)", rv);
			return -1;
		}
	}
	return 0;
}

/* The key's CKA_ID and RSA modulus, from the private key or its public key when the
 * operation needs them (decrypt rsa-pkcs, rsa-x509). 0 or -1. */
static int
key_parts(struct run *r)
{
	const struct options *o = &r->o;
	bool need_pub = (o->op == OP_DECRYPT && o->mech == MECH_RSA_PKCS);
	CK_RV rv;

	if (o->key_id) {
		if ((r->key_id = malloc(o->key_id_len)) == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			return -1;
		}
		memcpy(r->key_id, o->key_id, o->key_id_len);
		r->key_id_len = o->key_id_len;
	} else {
		/* best effort; an error just leaves the id empty */
		(void)get_attr_alloc(r->f, r->main_s, r->b.key, CKA_ID, &r->key_id, &r->key_id_len);
	}
	if (r->key_type == CKK_RSA) {
		rv = get_attr_alloc(r->f, r->main_s, r->b.key, CKA_MODULUS, &r->modulus,
		                    &r->modulus_len);
		if (rv != CKR_OK || r->modulus_len == 0)
			need_pub = need_pub || (o->mech == MECH_RSA_X509);
	}
	if (need_pub && find_public_key(r) != 0)
		return -1;
	if (r->key_type == CKK_RSA && (o->mech == MECH_RSA_X509 || o->op == OP_DECRYPT)) {
		if (r->modulus_len == 0) {
			fprintf(stderr, PROG ": could not read CKA_MODULUS of the key\n");
			return -1;
		}
		if (r->modulus_len > OUT_BUF_LEN) {
			fprintf(stderr,
			        PROG ": RSA modulus of %lu bytes is larger than the %u-byte output "
			             "buffer\n",
			        (unsigned long)r->modulus_len, OUT_BUF_LEN);
			return -1;
		}
	}
	return 0;
}

/* For decrypt rsa-pkcs: a 32-byte message encrypted once with the public key on the
 * token, and the plaintext to check. 0 or -1. */
static int
make_ciphertext(struct run *r)
{
	CK_MECHANISM m = {CKM_RSA_PKCS, NULL, 0};
	CK_ULONG ct_len = OUT_BUF_LEN;
	unsigned char plain[MSG_LEN];
	CK_RV rv;

	if ((r->b.input = malloc(OUT_BUF_LEN)) == NULL)
		return 0; /* reported by prepare_input */
	memcpy(plain, r->msg, MSG_LEN);
	if ((rv = r->f->C_EncryptInit(r->main_s, &m, r->pub)) != CKR_OK) {
		fail_rv("C_EncryptInit(CKM_RSA_PKCS, public key)", rv);
		return -1;
	}
	if ((rv = r->f->C_Encrypt(r->main_s, plain, MSG_LEN, r->b.input, &ct_len)) != CKR_OK) {
		fail_rv("C_Encrypt(CKM_RSA_PKCS, public key)", rv);
		return -1;
	}
	r->b.input_len = ct_len;
	memcpy(r->b.plain, r->msg, MSG_LEN);
	r->b.check_plain = true;
	return 0;
}

/* The mechanism and the input every operation uses. 0 or -1. */
static int
prepare_input(struct run *r)
{
	static const unsigned char digestinfo_sha256[19] = {
	        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	        0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
	};
	static const CK_MECHANISM_TYPE types[] = {
	        [MECH_RSA_PKCS] = CKM_RSA_PKCS,
	        [MECH_RSA_PSS] = CKM_RSA_PKCS_PSS,
	        [MECH_ECDSA] = CKM_ECDSA,
	        [MECH_RSA_X509] = CKM_RSA_X_509,
	};
	const struct options *o = &r->o;
	struct bench *b = &r->b;

	b->f = r->f;
	b->op = o->op;
	b->keep_session = o->keep_session;
	b->mech_type = types[o->mech];
	b->use_pss = o->mech == MECH_RSA_PSS;
	if (o->op == OP_SIGN && o->mech == MECH_RSA_PKCS) {
		b->input_len = sizeof(digestinfo_sha256) + MSG_LEN; /* 51 */
		if ((b->input = malloc(b->input_len)) != NULL) {
			memcpy(b->input, digestinfo_sha256, sizeof(digestinfo_sha256));
			memcpy(b->input + sizeof(digestinfo_sha256), r->msg, MSG_LEN);
		}
	} else if (o->mech == MECH_RSA_PSS || o->mech == MECH_ECDSA) {
		b->input_len = MSG_LEN;
		if ((b->input = malloc(b->input_len)) != NULL)
			memcpy(b->input, r->msg, MSG_LEN);
	} else if (o->mech == MECH_RSA_X509) {
		b->input_len = r->modulus_len;
		if ((b->input = malloc(b->input_len)) != NULL) {
			for (size_t i = 0; i < b->input_len; i++)
				b->input[i] = (unsigned char)(0x5a ^ (i * 13 + 3));
			b->input[0] = 0x00; /* keep it below the modulus */
		}
	} else if (make_ciphertext(r) != 0) {
		return -1;
	}
	if (b->input == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return -1;
	}
	return 0;
}

/* --verbose: what is about to run. */
static void
print_setup(const struct run *r)
{
	const struct options *o = &r->o;

	fprintf(stderr, PROG ": module %s slot %lu key ", o->module, (unsigned long)r->b.slot);
	if (o->key_label) {
		fprintf(stderr, "label=%s", o->key_label);
	} else {
		fprintf(stderr, "id=");
		print_hex(stderr, o->key_id, o->key_id_len);
	}
	fprintf(stderr, " (%s", r->key_type == CKK_RSA ? "RSA" : "EC");
	if (r->modulus_len)
		fprintf(stderr, " %lu bits", (unsigned long)r->modulus_len * 8);
	fprintf(stderr, ") op %s mech %s input %zu bytes, %ld thread(s), %.1f s\n",
	        o->op == OP_SIGN ? "sign" : "decrypt", mech_ck_name(r->b.mech_type), r->b.input_len,
	        o->threads, o->seconds);
}

/* One operation in the workers' pattern, to catch setup errors before the run. 0 or -1. */
static int
warm_up(struct run *r)
{
	unsigned char out[OUT_BUF_LEN];
	unsigned char *in = malloc(r->b.input_len);
	bool mismatch = false;
	char what[96];
	CK_RV rv;

	if (in == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return -1;
	}
	memcpy(in, r->b.input, r->b.input_len);
	rv = do_one_op(&r->b, CK_INVALID_HANDLE, in, r->b.input_len, out, &mismatch);
	free(in);
	if (rv != CKR_OK) {
		snprintf(what, sizeof(what), "warm-up %s with %s",
		         r->o.op == OP_SIGN ? "C_Sign" : "C_Decrypt", mech_ck_name(r->b.mech_type));
		fail_rv(what, rv);
		return -1;
	}
	if (mismatch) {
		fprintf(stderr, PROG ": warm-up C_Decrypt returned the wrong plaintext\n");
		return -1;
	}
	return 0;
}

/* Waits for the workers until grace seconds past the end: a wedged module (or pool) must
 * not wedge the benchmark; a worker still in an operation then is stuck. */
static void
join_workers(struct run *r)
{
	uint64_t limit = r->b.deadline_ns + (uint64_t)llround(r->o.grace * 1e9), rt, now;
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	now = p11mux_now_ns();
	rt = (uint64_t)until.tv_sec * 1000000000ull + (uint64_t)until.tv_nsec +
	     (limit > now ? limit - now : 0);
	until.tv_sec = (time_t)(rt / 1000000000ull);
	until.tv_nsec = (long)(rt % 1000000000ull);
	for (long i = 0; i < r->created; i++)
		if (pthread_timedjoin_np(r->workers[i].tid, NULL, &until) != 0) {
			r->workers[i].stuck = true;
			r->stuck++;
		}
}

/* Starts the workers, opens the gate, waits for them. 0 or -1. */
static int
run_workers(struct run *r)
{
	struct bench *b = &r->b;
	long n = r->o.threads;
	int e;

	if ((r->workers = calloc((size_t)n, sizeof(*r->workers))) == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return -1;
	}
	pthread_mutex_init(&b->gate_mu, NULL);
	pthread_cond_init(&b->gate_cv, NULL);
	r->gate_init = true;
	for (long i = 0; i < n; i++)
		pthread_mutex_init(&r->workers[i].mu, NULL);
	for (r->created = 0; r->created < n; r->created++) {
		r->workers[r->created].b = b;
		e = pthread_create(&r->workers[r->created].tid, NULL, worker_main,
		                   &r->workers[r->created]);
		if (e != 0) {
			fprintf(stderr, PROG ": pthread_create failed: %s\n", strerror(e));
			break;
		}
	}
	pthread_mutex_lock(&b->gate_mu);
	if (r->created == n) {
		b->start_ns = p11mux_now_ns();
		b->deadline_ns = b->start_ns + (uint64_t)llround(r->o.seconds * 1e9);
		b->gate = 1;
	} else {
		b->gate = -1;
	}
	pthread_cond_broadcast(&b->gate_cv);
	pthread_mutex_unlock(&b->gate_mu);
	if (r->created != n) {
		for (long i = 0; i < r->created; i++)
			pthread_join(r->workers[i].tid, NULL);
		return -1;
	}
	join_workers(r);
	r->elapsed = (double)(p11mux_now_ns() - b->start_ns) / 1e9;
	return 0;
}

/* The figures of a run, merged from the workers. */
struct figures {
	uint64_t *all; /* latencies, sorted */
	size_t total;
	uint64_t errors, p50, p95, p99, ops_s;
	const struct worker *first; /* the first error's worker, or NULL */
	bool oom;
};

static void
print_json(const struct run *r, const struct figures *g)
{
	const struct options *o = &r->o;

	printf("{\"name\":");
	json_string(stdout, o->name);
	printf(",\"op\":\"%s\",\"mech\":\"%s\",\"threads\":%ld,"
	       "\"seconds\":%.3f,\"ops\":%zu,\"ops_per_s\":%" PRIu64 ","
	       "\"p50_us\":%" PRIu64 ",\"p95_us\":%" PRIu64 ","
	       "\"p99_us\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"stuck\":%ld,"
	       "\"first_error\":",
	       o->op == OP_SIGN ? "sign" : "decrypt", mech_arg_names[o->mech], o->threads,
	       r->elapsed, g->total, g->ops_s, (g->p50 + 500) / 1000, (g->p95 + 500) / 1000,
	       (g->p99 + 500) / 1000, g->errors, r->stuck);
	if (g->first == NULL) {
		printf("null,\"first_error_code\":null}\n");
	} else if (g->first->first_mismatch) {
		json_string(stdout, "plaintext mismatch");
		printf(",\"first_error_code\":null}\n");
	} else {
		json_string(stdout, p11mux_rv_name(g->first->first_rv));
		printf(",\"first_error_code\":\"0x%lx\"}\n", (unsigned long)g->first->first_rv);
	}
}

static void
print_text(const struct run *r, const struct figures *g)
{
	char first[96];

	printf("%s: threads=%ld seconds=%.1f ops=%zu ops/s=%" PRIu64
	       " p50=%.2fms p95=%.2fms p99=%.2fms errors=%" PRIu64,
	       r->o.name, r->o.threads, r->elapsed, g->total, g->ops_s, (double)g->p50 / 1e6,
	       (double)g->p95 / 1e6, (double)g->p99 / 1e6, g->errors);
	if (g->first != NULL)
		printf(" (first: %s)", g->first->first_mismatch
		                               ? "plaintext mismatch"
		                               : rv_str(g->first->first_rv, first, sizeof(first)));
	if (r->stuck > 0)
		printf(" stuck=%ld", r->stuck);
	printf("\n");
}

/* Merges the workers' figures and prints them. The exit status. */
static int
report(struct run *r)
{
	struct figures g;
	int ret;

	memset(&g, 0, sizeof(g));
	if (merge_results(r->workers, r->o.threads, &g.all, &g.total, &g.errors, &g.oom,
	                  &g.first) != 0) {
		fprintf(stderr, PROG ": out of memory merging latencies\n");
		return EXIT_SETUP;
	}
	if (g.oom)
		fprintf(stderr, PROG ": warning: out of memory recording latencies; some threads "
		                     "stopped early\n");
	qsort(g.all, g.total, sizeof(*g.all), cmp_u64);
	g.p50 = percentile(g.all, g.total, 50.0);
	g.p95 = percentile(g.all, g.total, 95.0);
	g.p99 = percentile(g.all, g.total, 99.0);
	g.ops_s = r->elapsed > 0 ? (uint64_t)llround((double)g.total / r->elapsed) : 0;
	if (r->o.json)
		print_json(r, &g);
	else
		print_text(r, &g);
	fflush(stdout);
	free(g.all);
	if (r->stuck > 0) {
		/* Threads are still inside the module: neither C_Finalize nor freeing what they
		 * use is safe. */
		fprintf(stderr, PROG ": %ld operations still in flight %.0f s after the end\n",
		        r->stuck, r->o.grace);
		fflush(NULL);
		_exit(EXIT_RUN_ERRORS);
	}
	ret = g.errors > 0 || g.oom || g.total == 0 ? EXIT_RUN_ERRORS : EXIT_OK_RUN;
	return ret;
}

/* Undoes what was set up, in reverse. */
static void
cleanup(struct run *r)
{
	CK_RV rv;

	if (r->workers) {
		for (long i = 0; i < r->o.threads; i++) {
			free(r->workers[i].lat);
			pthread_mutex_destroy(&r->workers[i].mu);
		}
		free(r->workers);
	}
	if (r->gate_init) {
		pthread_cond_destroy(&r->b.gate_cv);
		pthread_mutex_destroy(&r->b.gate_mu);
	}
	free(r->b.input);
	free(r->modulus);
	free(r->key_id);
	if (r->f && r->main_s != CK_INVALID_HANDLE) {
		if (r->logged_in && (rv = r->f->C_Logout(r->main_s)) != CKR_OK &&
		    rv != CKR_USER_NOT_LOGGED_IN)
			fail_rv("C_Logout", rv);
		if ((rv = r->f->C_CloseSession(r->main_s)) != CKR_OK)
			fail_rv("C_CloseSession", rv);
	}
	if (r->f && r->initialized && (rv = r->f->C_Finalize(NULL)) != CKR_OK)
		fail_rv("C_Finalize", rv);
	if (r->dl)
		dlclose(r->dl);
	free_options(&r->o);
}

int
main(int argc, char **argv)
{
	static struct run r;
	int ret;

	r.main_s = CK_INVALID_HANDLE;
	r.key_type = (CK_KEY_TYPE)-1;
	r.pub = CK_INVALID_HANDLE;
	if ((ret = parse_options(argc, argv, &r.o)) >= 0) {
		free_options(&r.o);
		return ret;
	}
	for (size_t i = 0; i < MSG_LEN; i++)
		r.msg[i] = (unsigned char)(0xa5 ^ (i * 7 + 1));
	ret = EXIT_SETUP;
	if (load_module(&r) == 0 && open_and_login(&r) == 0 && find_private_key(&r) == 0 &&
	    key_parts(&r) == 0 && prepare_input(&r) == 0) {
		if (r.o.verbose)
			print_setup(&r);
		if (warm_up(&r) == 0 && run_workers(&r) == 0)
			ret = report(&r);
	}
	cleanup(&r);
	return ret;
}
