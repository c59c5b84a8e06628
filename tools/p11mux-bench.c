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

#define PROG "p11mux-bench"

#define EXIT_OK_RUN     0
#define EXIT_RUN_ERRORS 1
#define EXIT_SETUP      2

#define OUT_BUF_LEN 1024u /* output buffer for C_Sign / C_Decrypt */
#define MSG_LEN     32u   /* hash / plaintext size */
#define MAX_THREADS 4096
#define MAX_SECONDS 86400.0

/* ------------------------------------------------------------------ */
/* CK_RV names                                                         */
/* ------------------------------------------------------------------ */

struct rv_name {
	CK_RV rv;
	const char *name;
};

/* clang-format off */
#define RVN(x) { x, #x }
/* clang-format on */
static const struct rv_name rv_names[] = {
        RVN(CKR_OK),
        RVN(CKR_CANCEL),
        RVN(CKR_HOST_MEMORY),
        RVN(CKR_SLOT_ID_INVALID),
        RVN(CKR_GENERAL_ERROR),
        RVN(CKR_FUNCTION_FAILED),
        RVN(CKR_ARGUMENTS_BAD),
        RVN(CKR_NO_EVENT),
        RVN(CKR_NEED_TO_CREATE_THREADS),
        RVN(CKR_CANT_LOCK),
        RVN(CKR_ATTRIBUTE_READ_ONLY),
        RVN(CKR_ATTRIBUTE_SENSITIVE),
        RVN(CKR_ATTRIBUTE_TYPE_INVALID),
        RVN(CKR_ATTRIBUTE_VALUE_INVALID),
        RVN(CKR_DATA_INVALID),
        RVN(CKR_DATA_LEN_RANGE),
        RVN(CKR_DEVICE_ERROR),
        RVN(CKR_DEVICE_MEMORY),
        RVN(CKR_DEVICE_REMOVED),
        RVN(CKR_ENCRYPTED_DATA_INVALID),
        RVN(CKR_ENCRYPTED_DATA_LEN_RANGE),
        RVN(CKR_FUNCTION_CANCELED),
        RVN(CKR_FUNCTION_NOT_PARALLEL),
        RVN(CKR_FUNCTION_NOT_SUPPORTED),
        RVN(CKR_KEY_HANDLE_INVALID),
        RVN(CKR_KEY_SIZE_RANGE),
        RVN(CKR_KEY_TYPE_INCONSISTENT),
        RVN(CKR_KEY_FUNCTION_NOT_PERMITTED),
        RVN(CKR_MECHANISM_INVALID),
        RVN(CKR_MECHANISM_PARAM_INVALID),
        RVN(CKR_OBJECT_HANDLE_INVALID),
        RVN(CKR_OPERATION_ACTIVE),
        RVN(CKR_OPERATION_NOT_INITIALIZED),
        RVN(CKR_PIN_INCORRECT),
        RVN(CKR_PIN_INVALID),
        RVN(CKR_PIN_LEN_RANGE),
        RVN(CKR_PIN_EXPIRED),
        RVN(CKR_PIN_LOCKED),
        RVN(CKR_SESSION_CLOSED),
        RVN(CKR_SESSION_COUNT),
        RVN(CKR_SESSION_HANDLE_INVALID),
        RVN(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
        RVN(CKR_SESSION_READ_ONLY),
        RVN(CKR_SESSION_EXISTS),
        RVN(CKR_SIGNATURE_INVALID),
        RVN(CKR_SIGNATURE_LEN_RANGE),
        RVN(CKR_TEMPLATE_INCOMPLETE),
        RVN(CKR_TEMPLATE_INCONSISTENT),
        RVN(CKR_TOKEN_NOT_PRESENT),
        RVN(CKR_TOKEN_NOT_RECOGNIZED),
        RVN(CKR_TOKEN_WRITE_PROTECTED),
        RVN(CKR_USER_ALREADY_LOGGED_IN),
        RVN(CKR_USER_NOT_LOGGED_IN),
        RVN(CKR_USER_PIN_NOT_INITIALIZED),
        RVN(CKR_USER_TYPE_INVALID),
        RVN(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
        RVN(CKR_USER_TOO_MANY_TYPES),
        RVN(CKR_RANDOM_NO_RNG),
        RVN(CKR_DOMAIN_PARAMS_INVALID),
        RVN(CKR_CURVE_NOT_SUPPORTED),
        RVN(CKR_BUFFER_TOO_SMALL),
        RVN(CKR_CRYPTOKI_NOT_INITIALIZED),
        RVN(CKR_CRYPTOKI_ALREADY_INITIALIZED),
        RVN(CKR_MUTEX_BAD),
        RVN(CKR_MUTEX_NOT_LOCKED),
        RVN(CKR_LIBRARY_LOAD_FAILED),
        RVN(CKR_PIN_TOO_WEAK),
        RVN(CKR_PUBLIC_KEY_INVALID),
        RVN(CKR_FUNCTION_REJECTED),
};
#undef RVN

static const char *
rv_to_name(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	if (rv & CKR_VENDOR_DEFINED)
		return "CKR_VENDOR_DEFINED";
	return "CKR_UNKNOWN";
}

/* "CKR_PIN_INCORRECT 0xa0" */
static const char *
rv_str(CK_RV rv, char *buf, size_t len)
{
	snprintf(buf, len, "%s 0x%lx", rv_to_name(rv), (unsigned long)rv);
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
	char *pin; /* owned */
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

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;
	while (n--)
		*v++ = 0;
}

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
		uint64_t t0 = now_ns();
		if (t0 >= deadline)
			break;
		bool mismatch = false;
		CK_RV rv;

		if (kept == CK_INVALID_HANDLE && b->keep_session &&
		    (rv = b->f->C_OpenSession(b->slot, CKF_SERIAL_SESSION, NULL, NULL, &kept)) !=
		            CKR_OK) {
			kept = CK_INVALID_HANDLE;
			worker_note_error(w, rv, false, now_ns());
			continue;
		}
		rv = do_one_op(b, kept, in, b->input_len, out, &mismatch);
		uint64_t t1 = now_ns();

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
		wipe(o->pin, strlen(o->pin));
		free(o->pin);
	}
	free(o->key_id);
	o->pin = NULL;
	o->key_id = NULL;
}

/* Returns -1 to continue, otherwise an exit status. */
static int
parse_options(int argc, char **argv, struct options *o)
{
	enum {
		O_MODULE = 256,
		O_INIT_ARGS,
		O_TOKEN,
		O_SLOT,
		O_PIN,
		O_PIN_FILE,
		O_KEY_LABEL,
		O_KEY_ID,
		O_OP,
		O_MECH,
		O_THREADS,
		O_SECONDS,
		O_GRACE,
		O_NAME,
		O_JSON,
		O_VERBOSE,
		O_KEEP_SESSION,
		O_HELP,
	};
	static const struct option longopts[] = {
	        {"module", required_argument, NULL, O_MODULE},
	        {"init-args", required_argument, NULL, O_INIT_ARGS},
	        {"token", required_argument, NULL, O_TOKEN},
	        {"slot", required_argument, NULL, O_SLOT},
	        {"pin", required_argument, NULL, O_PIN},
	        {"pin-file", required_argument, NULL, O_PIN_FILE},
	        {"key-label", required_argument, NULL, O_KEY_LABEL},
	        {"key-id", required_argument, NULL, O_KEY_ID},
	        {"op", required_argument, NULL, O_OP},
	        {"mech", required_argument, NULL, O_MECH},
	        {"threads", required_argument, NULL, O_THREADS},
	        {"seconds", required_argument, NULL, O_SECONDS},
	        {"grace", required_argument, NULL, O_GRACE},
	        {"name", required_argument, NULL, O_NAME},
	        {"json", no_argument, NULL, O_JSON},
	        {"verbose", no_argument, NULL, O_VERBOSE},
	        {"keep-session", no_argument, NULL, O_KEEP_SESSION},
	        {"help", no_argument, NULL, O_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *pin_arg = NULL, *pin_file = NULL;
	int c;

	o->threads = 1;
	o->seconds = 10.0;
	o->grace = 10.0;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case O_MODULE:
			o->module = optarg;
			break;
		case O_INIT_ARGS:
			o->init_args = optarg;
			break;
		case O_TOKEN:
			o->token = optarg;
			break;
		case O_SLOT: {
			unsigned long long v;
			errno = 0;
			v = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end || optarg[0] == '-' || v > ULONG_MAX) {
				fprintf(stderr, PROG ": invalid --slot '%s'\n", optarg);
				return EXIT_SETUP;
			}
			o->slot = (CK_SLOT_ID)v;
			o->have_slot = true;
			break;
		}
		case O_PIN:
			pin_arg = optarg;
			break;
		case O_PIN_FILE:
			pin_file = optarg;
			break;
		case O_KEY_LABEL:
			o->key_label = optarg;
			break;
		case O_KEY_ID:
			free(o->key_id);
			o->key_id = parse_hex(optarg, &o->key_id_len);
			if (o->key_id == NULL) {
				fprintf(stderr, PROG ": invalid --key-id '%s' (want hex)\n",
				        optarg);
				return EXIT_SETUP;
			}
			break;
		case O_OP:
			if (strcmp(optarg, "sign") == 0)
				o->op = OP_SIGN;
			else if (strcmp(optarg, "decrypt") == 0)
				o->op = OP_DECRYPT;
			else {
				fprintf(stderr, PROG ": invalid --op '%s' (sign|decrypt)\n",
				        optarg);
				return EXIT_SETUP;
			}
			o->have_op = true;
			break;
		case O_MECH: {
			size_t i, nm = sizeof(mech_arg_names) / sizeof(mech_arg_names[0]);
			for (i = 0; i < nm; i++)
				if (strcmp(optarg, mech_arg_names[i]) == 0)
					break;
			if (i == nm) {
				fprintf(stderr,
				        PROG ": invalid --mech '%s' "
				             "(rsa-pkcs|rsa-pss|ecdsa|rsa-x509)\n",
				        optarg);
				return EXIT_SETUP;
			}
			o->mech = (enum mech_kind)i;
			o->have_mech = true;
			break;
		}
		case O_THREADS:
			errno = 0;
			o->threads = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || o->threads < 1 ||
			    o->threads > MAX_THREADS) {
				fprintf(stderr, PROG ": invalid --threads '%s' (1..%d)\n", optarg,
				        MAX_THREADS);
				return EXIT_SETUP;
			}
			break;
		case O_SECONDS:
			errno = 0;
			o->seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->seconds > 0.0) ||
			    o->seconds > MAX_SECONDS) {
				fprintf(stderr, PROG ": invalid --seconds '%s' (0 < T <= %.0f)\n",
				        optarg, MAX_SECONDS);
				return EXIT_SETUP;
			}
			break;
		case O_GRACE:
			errno = 0;
			o->grace = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->grace >= 0.0) ||
			    o->grace > MAX_SECONDS) {
				fprintf(stderr, PROG ": invalid --grace '%s' (0 <= T <= %.0f)\n",
				        optarg, MAX_SECONDS);
				return EXIT_SETUP;
			}
			break;
		case O_NAME:
			o->name = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_VERBOSE:
			o->verbose = true;
			break;
		case O_KEEP_SESSION:
			o->keep_session = true;
			break;
		case 'h':
		case O_HELP:
			usage(stdout);
			return EXIT_OK_RUN;
		case '?':
		default:
			if (optopt > 0 && optopt < 256)
				fprintf(stderr, PROG ": bad or incomplete option '-%c'\n", optopt);
			else
				fprintf(stderr, PROG ": bad or incomplete option '%s'\n",
				        argv[optind - 1]);
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return EXIT_SETUP;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return EXIT_SETUP;
	}

#define REQUIRE(cond, msg)                                                                         \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, PROG ": " msg "\nTry '" PROG " --help'.\n");               \
			return EXIT_SETUP;                                                         \
		}                                                                                  \
	} while (0)

	REQUIRE(o->module, "--module is required");
	REQUIRE(!(o->token && o->have_slot), "use only one of --token and --slot");
	REQUIRE(pin_arg || pin_file, "--pin or --pin-file is required");
	REQUIRE(!(pin_arg && pin_file), "use only one of --pin and --pin-file");
	REQUIRE(o->key_label || o->key_id, "--key-label or --key-id is required");
	REQUIRE(!(o->key_label && o->key_id), "use only one of --key-label and --key-id");
	REQUIRE(o->have_op, "--op is required");
	REQUIRE(o->have_mech, "--mech is required");
	REQUIRE(!(o->op == OP_DECRYPT && (o->mech == MECH_RSA_PSS || o->mech == MECH_ECDSA)),
	        "--op decrypt supports only --mech rsa-pkcs or rsa-x509");
#undef REQUIRE

	if (pin_file) {
		o->pin = read_pin_file(pin_file, o->token);
		if (o->pin == NULL)
			return EXIT_SETUP;
	} else {
		o->pin = strdup(pin_arg);
		if (o->pin == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			return EXIT_SETUP;
		}
	}
	if (o->name == NULL) {
		const char *slash = strrchr(o->module, '/');
		o->name = slash ? slash + 1 : o->module;
	}
	return -1;
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

int
main(int argc, char **argv)
{
	static const unsigned char digestinfo_sha256[19] = {
	        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	        0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
	};
	struct options o;
	struct bench b;
	struct worker *workers = NULL;
	void *dl = NULL;
	CK_FUNCTION_LIST_PTR f = NULL;
	CK_C_GetFunctionList get_fl;
	CK_C_INITIALIZE_ARGS init_args;
	CK_SESSION_HANDLE main_s = CK_INVALID_HANDLE;
	bool initialized = false, logged_in = false, gate_init = false;
	CK_KEY_TYPE key_type = (CK_KEY_TYPE)-1;
	unsigned char *modulus = NULL, *key_id = NULL;
	CK_ULONG modulus_len = 0, key_id_len = 0;
	unsigned char msg[MSG_LEN];
	uint64_t *all = NULL;
	long created = 0, stuck = 0;
	int ret = EXIT_SETUP;
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE;
	bool need_pub;
	uint64_t end_ns, errors = 0, p50, p95, p99, ops_s;
	double elapsed;
	size_t total = 0;
	const struct worker *first = NULL;
	bool oom = false;
	char first_buf[96] = "";
	CK_RV rv;

	memset(&o, 0, sizeof(o));
	memset(&b, 0, sizeof(b));

	ret = parse_options(argc, argv, &o);
	if (ret >= 0) {
		free_options(&o);
		return ret;
	}
	ret = EXIT_SETUP;

	for (size_t i = 0; i < MSG_LEN; i++)
		msg[i] = (unsigned char)(0xa5 ^ (i * 7 + 1));

	/* --- load + initialize module --- */
	dlerror();
	dl = dlopen(o.module, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		const char *e = dlerror();
		fprintf(stderr, PROG ": dlopen(%s) failed: %s\n", o.module,
		        e ? e : "unknown error");
		goto out;
	}
	*(void **)&get_fl = dlsym(dl, "C_GetFunctionList");
	if (get_fl == NULL) {
		fprintf(stderr, PROG ": %s has no C_GetFunctionList symbol\n", o.module);
		goto out;
	}
	rv = get_fl(&f);
	if (rv != CKR_OK || f == NULL) {
		fail_rv("C_GetFunctionList", rv != CKR_OK ? rv : CKR_GENERAL_ERROR);
		f = NULL;
		goto out;
	}

	memset(&init_args, 0, sizeof(init_args));
	init_args.flags = CKF_OS_LOCKING_OK;
	init_args.pReserved = (void *)o.init_args; /* NULL unless given */
	rv = f->C_Initialize(&init_args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		fail_rv(o.init_args ? "C_Initialize (with --init-args as pReserved; "
		                      "the module may not accept library parameters)"
		                    : "C_Initialize",
		        rv);
		goto out;
	}
	initialized = (rv == CKR_OK);

	/* --- slot, session, login --- */
	if (find_slot(f, &o, &b.slot) != 0)
		goto out;

	rv = f->C_OpenSession(b.slot, CKF_SERIAL_SESSION, NULL, NULL, &main_s);
	if (rv != CKR_OK) {
		fail_rv("C_OpenSession", rv);
		goto out;
	}
	rv = f->C_Login(main_s, CKU_USER, (unsigned char *)o.pin, strlen(o.pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		fail_rv("C_Login(CKU_USER)", rv);
		goto out;
	}
	logged_in = (rv == CKR_OK);

	/* --- private key --- */
	{
		CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
		CK_ATTRIBUTE tmpl[2] = {
		        {CKA_CLASS, &cls, sizeof(cls)},
		        {CKA_LABEL, NULL, 0},
		};
		CK_ULONG found;

		if (o.key_label) {
			tmpl[1].pValue = (void *)o.key_label;
			tmpl[1].ulValueLen = strlen(o.key_label);
		} else {
			tmpl[1].type = CKA_ID;
			tmpl[1].pValue = o.key_id;
			tmpl[1].ulValueLen = o.key_id_len;
		}
		rv = find_object(f, main_s, tmpl, 2, &b.key, &found);
		if (rv != CKR_OK) {
			fail_rv("private key search (C_FindObjects*)", rv);
			goto out;
		}
		if (found == 0) {
			fprintf(stderr, PROG ": no private key with ");
			if (o.key_label) {
				fprintf(stderr, "CKA_LABEL '%s'", o.key_label);
			} else {
				fprintf(stderr, "CKA_ID ");
				print_hex(stderr, o.key_id, o.key_id_len);
			}
			fprintf(stderr, " found on the token (or not visible after "
			                "login)\n");
			goto out;
		}
		if (found > 1)
			fprintf(stderr, PROG ": warning: several private keys match; "
			                     "using the first\n");
	}
	{
		CK_ATTRIBUTE a = {CKA_KEY_TYPE, &key_type, sizeof(key_type)};
		rv = f->C_GetAttributeValue(main_s, b.key, &a, 1);
		if (rv != CKR_OK) {
			fail_rv("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
			goto out;
		}
	}
	if ((o.mech == MECH_ECDSA) != (key_type == CKK_EC) ||
	    (o.mech != MECH_ECDSA && key_type != CKK_RSA)) {
		fprintf(stderr,
		        PROG ": --mech %s needs an %s key, but the key's "
		             "CKA_KEY_TYPE is %s 0x%lx\n",
		        mech_arg_names[o.mech], o.mech == MECH_ECDSA ? "EC" : "RSA",
		        key_type == CKK_RSA  ? "CKK_RSA"
		        : key_type == CKK_EC ? "CKK_EC"
		                             : "other",
		        (unsigned long)key_type);
		goto out;
	}

	/* CKA_ID of the private key (to find the matching public key) */
	if (o.key_id) {
		key_id = malloc(o.key_id_len);
		if (key_id == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out;
		}
		memcpy(key_id, o.key_id, o.key_id_len);
		key_id_len = o.key_id_len;
	} else {
		/* best effort; an error just leaves the id empty */
		(void)get_attr_alloc(f, main_s, b.key, CKA_ID, &key_id, &key_id_len);
	}

	/* public key, if needed (decrypt rsa-pkcs) or modulus fallback */
	need_pub = (o.op == OP_DECRYPT && o.mech == MECH_RSA_PKCS);
	if (key_type == CKK_RSA) {
		rv = get_attr_alloc(f, main_s, b.key, CKA_MODULUS, &modulus, &modulus_len);
		if (rv != CKR_OK || modulus_len == 0)
			need_pub = need_pub || (o.mech == MECH_RSA_X509);
	}
	if (need_pub) {
		CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
		CK_ATTRIBUTE tmpl[2] = {
		        {CKA_CLASS, &cls, sizeof(cls)},
		        {CKA_ID, key_id, key_id_len},
		};
		CK_ULONG found = 0;
		if (key_id_len == 0 && o.key_label) {
			tmpl[1].type = CKA_LABEL;
			tmpl[1].pValue = (void *)o.key_label;
			tmpl[1].ulValueLen = strlen(o.key_label);
		}
		rv = find_object(f, main_s, tmpl, 2, &pub, &found);
		if (rv != CKR_OK) {
			fail_rv("public key search (C_FindObjects*)", rv);
			goto out;
		}
		if (found == 0) {
			fprintf(stderr,
			        PROG ": no public key with the private key's "
			             "%s found (needed for --op %s --mech %s)\n",
			        key_id_len ? "CKA_ID" : "CKA_LABEL",
			        o.op == OP_SIGN ? "sign" : "decrypt", mech_arg_names[o.mech]);
			goto out;
		}
		if (modulus_len == 0) {
			free(modulus);
			modulus = NULL;
			rv = get_attr_alloc(f, main_s, pub, CKA_MODULUS, &modulus, &modulus_len);
			if (rv != CKR_OK) {
				fail_rv("C_GetAttributeValue(CKA_MODULUS)", rv);
				goto out;
			}
		}
	}
	if (key_type == CKK_RSA && (o.mech == MECH_RSA_X509 || o.op == OP_DECRYPT)) {
		if (modulus_len == 0) {
			fprintf(stderr, PROG ": could not read CKA_MODULUS of the key\n");
			goto out;
		}
		if (modulus_len > OUT_BUF_LEN) {
			fprintf(stderr,
			        PROG ": RSA modulus of %lu bytes is larger than "
			             "the %u-byte output buffer\n",
			        (unsigned long)modulus_len, OUT_BUF_LEN);
			goto out;
		}
	}

	/* --- mechanism + input --- */
	b.f = f;
	b.op = o.op;
	b.keep_session = o.keep_session;
	switch (o.mech) {
	case MECH_RSA_PKCS:
		b.mech_type = CKM_RSA_PKCS;
		break;
	case MECH_RSA_PSS:
		b.mech_type = CKM_RSA_PKCS_PSS;
		b.use_pss = true;
		break;
	case MECH_ECDSA:
		b.mech_type = CKM_ECDSA;
		break;
	case MECH_RSA_X509:
		b.mech_type = CKM_RSA_X_509;
		break;
	}

	if (o.op == OP_SIGN && o.mech == MECH_RSA_PKCS) {
		b.input_len = sizeof(digestinfo_sha256) + MSG_LEN; /* 51 */
		b.input = malloc(b.input_len);
		if (b.input) {
			memcpy(b.input, digestinfo_sha256, sizeof(digestinfo_sha256));
			memcpy(b.input + sizeof(digestinfo_sha256), msg, MSG_LEN);
		}
	} else if (o.mech == MECH_RSA_PSS || o.mech == MECH_ECDSA) {
		b.input_len = MSG_LEN;
		b.input = malloc(b.input_len);
		if (b.input)
			memcpy(b.input, msg, MSG_LEN);
	} else if (o.mech == MECH_RSA_X509) {
		b.input_len = modulus_len;
		b.input = malloc(b.input_len);
		if (b.input) {
			for (size_t i = 0; i < b.input_len; i++)
				b.input[i] = (unsigned char)(0x5a ^ (i * 13 + 3));
			b.input[0] = 0x00; /* keep it below the modulus */
		}
	} else {
		/* decrypt rsa-pkcs: encrypt a 32-byte message once with the
		 * public key on the token */
		CK_MECHANISM m = {CKM_RSA_PKCS, NULL, 0};
		CK_ULONG ct_len = OUT_BUF_LEN;
		unsigned char plain[MSG_LEN];

		b.input = malloc(OUT_BUF_LEN);
		if (b.input == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out;
		}
		memcpy(plain, msg, MSG_LEN);
		rv = f->C_EncryptInit(main_s, &m, pub);
		if (rv != CKR_OK) {
			fail_rv("C_EncryptInit(CKM_RSA_PKCS, public key)", rv);
			goto out;
		}
		rv = f->C_Encrypt(main_s, plain, MSG_LEN, b.input, &ct_len);
		if (rv != CKR_OK) {
			fail_rv("C_Encrypt(CKM_RSA_PKCS, public key)", rv);
			goto out;
		}
		b.input_len = ct_len;
		memcpy(b.plain, msg, MSG_LEN);
		b.check_plain = true;
	}
	if (b.input == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}

	if (o.verbose) {
		fprintf(stderr, PROG ": module %s slot %lu key ", o.module, (unsigned long)b.slot);
		if (o.key_label) {
			fprintf(stderr, "label=%s", o.key_label);
		} else {
			fprintf(stderr, "id=");
			print_hex(stderr, o.key_id, o.key_id_len);
		}
		fprintf(stderr, " (%s", key_type == CKK_RSA ? "RSA" : "EC");
		if (modulus_len)
			fprintf(stderr, " %lu bits", (unsigned long)modulus_len * 8);
		fprintf(stderr,
		        ") op %s mech %s input %zu bytes, %ld thread(s), "
		        "%.1f s\n",
		        o.op == OP_SIGN ? "sign" : "decrypt", mech_ck_name(b.mech_type),
		        b.input_len, o.threads, o.seconds);
	}

	/* --- warm-up: one op in the worker pattern to catch setup errors --- */
	{
		unsigned char out[OUT_BUF_LEN];
		unsigned char *in = malloc(b.input_len);
		bool mismatch = false;

		if (in == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out;
		}
		memcpy(in, b.input, b.input_len);
		rv = do_one_op(&b, CK_INVALID_HANDLE, in, b.input_len, out, &mismatch);
		free(in);
		if (rv != CKR_OK) {
			char what[96];
			snprintf(what, sizeof(what), "warm-up %s with %s",
			         o.op == OP_SIGN ? "C_Sign" : "C_Decrypt",
			         mech_ck_name(b.mech_type));
			fail_rv(what, rv);
			goto out;
		}
		if (mismatch) {
			fprintf(stderr, PROG ": warm-up C_Decrypt returned the wrong "
			                     "plaintext\n");
			goto out;
		}
	}

	/* --- run --- */
	workers = calloc((size_t)o.threads, sizeof(*workers));
	if (workers == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	pthread_mutex_init(&b.gate_mu, NULL);
	pthread_cond_init(&b.gate_cv, NULL);
	gate_init = true;

	for (long i = 0; i < o.threads; i++)
		pthread_mutex_init(&workers[i].mu, NULL);
	for (created = 0; created < o.threads; created++) {
		int e;
		workers[created].b = &b;
		e = pthread_create(&workers[created].tid, NULL, worker_main, &workers[created]);
		if (e != 0) {
			fprintf(stderr, PROG ": pthread_create failed: %s\n", strerror(e));
			break;
		}
	}

	pthread_mutex_lock(&b.gate_mu);
	if (created == o.threads) {
		b.start_ns = now_ns();
		b.deadline_ns = b.start_ns + (uint64_t)llround(o.seconds * 1e9);
		b.gate = 1;
	} else {
		b.gate = -1;
	}
	pthread_cond_broadcast(&b.gate_cv);
	pthread_mutex_unlock(&b.gate_mu);

	if (created != o.threads) {
		for (long i = 0; i < created; i++)
			pthread_join(workers[i].tid, NULL);
		goto out;
	}
	/* A wedged module (or pool) must not wedge the benchmark: operations still in flight
	 * grace seconds after the end are reported as stuck. */
	{
		struct timespec until;
		uint64_t limit = b.deadline_ns + (uint64_t)llround(o.grace * 1e9), rt;

		clock_gettime(CLOCK_REALTIME, &until);
		rt = (uint64_t)until.tv_sec * 1000000000ull + (uint64_t)until.tv_nsec +
		     (limit > now_ns() ? limit - now_ns() : 0);
		until.tv_sec = (time_t)(rt / 1000000000ull);
		until.tv_nsec = (long)(rt % 1000000000ull);
		for (long i = 0; i < created; i++)
			if (pthread_timedjoin_np(workers[i].tid, NULL, &until) != 0) {
				workers[i].stuck = true;
				stuck++;
			}
	}

	end_ns = now_ns();
	elapsed = (double)(end_ns - b.start_ns) / 1e9;

	/* --- merge + report --- */

	if (merge_results(workers, o.threads, &all, &total, &errors, &oom, &first) != 0) {
		fprintf(stderr, PROG ": out of memory merging latencies\n");
		goto out;
	}
	if (oom)
		fprintf(stderr, PROG ": warning: out of memory recording latencies; "
		                     "some threads stopped early\n");
	qsort(all, total, sizeof(*all), cmp_u64);

	p50 = percentile(all, total, 50.0);
	p95 = percentile(all, total, 95.0);
	p99 = percentile(all, total, 99.0);
	ops_s = elapsed > 0 ? (uint64_t)llround((double)total / elapsed) : 0;
	if (first) {
		if (first->first_mismatch)
			snprintf(first_buf, sizeof(first_buf), "plaintext mismatch");
		else
			rv_str(first->first_rv, first_buf, sizeof(first_buf));
	}

	if (o.json) {
		printf("{\"name\":");
		json_string(stdout, o.name);
		printf(",\"op\":\"%s\",\"mech\":\"%s\",\"threads\":%ld,"
		       "\"seconds\":%.3f,\"ops\":%zu,\"ops_per_s\":%" PRIu64 ","
		       "\"p50_us\":%" PRIu64 ",\"p95_us\":%" PRIu64 ","
		       "\"p99_us\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"stuck\":%ld,"
		       "\"first_error\":",
		       o.op == OP_SIGN ? "sign" : "decrypt", mech_arg_names[o.mech], o.threads,
		       elapsed, total, ops_s, (p50 + 500) / 1000, (p95 + 500) / 1000,
		       (p99 + 500) / 1000, errors, stuck);
		if (first) {
			json_string(stdout, first->first_mismatch ? "plaintext mismatch"
			                                          : rv_to_name(first->first_rv));
			if (first->first_mismatch)
				printf(",\"first_error_code\":null}\n");
			else
				printf(",\"first_error_code\":\"0x%lx\"}\n",
				       (unsigned long)first->first_rv);
		} else {
			printf("null,\"first_error_code\":null}\n");
		}
	} else {
		printf("%s: threads=%ld seconds=%.1f ops=%zu ops/s=%" PRIu64
		       " p50=%.2fms p95=%.2fms p99=%.2fms errors=%" PRIu64,
		       o.name, o.threads, elapsed, total, ops_s, (double)p50 / 1e6,
		       (double)p95 / 1e6, (double)p99 / 1e6, errors);
		if (first)
			printf(" (first: %s)", first_buf);
		if (stuck > 0)
			printf(" stuck=%ld", stuck);
		printf("\n");
	}
	fflush(stdout);
	if (stuck > 0) {
		/* Threads are still inside the module: neither C_Finalize nor freeing what they
		 * use is safe. */
		fprintf(stderr, PROG ": %ld operations still in flight %.0f s after the end\n",
		        stuck, o.grace);
		fflush(NULL);
		_exit(EXIT_RUN_ERRORS);
	}

	if (errors > 0 || oom)
		ret = EXIT_RUN_ERRORS;
	else if (total == 0)
		ret = EXIT_RUN_ERRORS;
	else
		ret = EXIT_OK_RUN;

out:
	if (workers) {
		for (long i = 0; i < o.threads; i++) {
			free(workers[i].lat);
			pthread_mutex_destroy(&workers[i].mu);
		}
		free(workers);
	}
	if (gate_init) {
		pthread_cond_destroy(&b.gate_cv);
		pthread_mutex_destroy(&b.gate_mu);
	}
	free(all);
	free(b.input);
	free(modulus);
	free(key_id);
	if (f) {
		if (main_s != CK_INVALID_HANDLE) {
			if (logged_in) {
				rv = f->C_Logout(main_s);
				if (rv != CKR_OK && rv != CKR_USER_NOT_LOGGED_IN)
					fail_rv("C_Logout", rv);
			}
			rv = f->C_CloseSession(main_s);
			if (rv != CKR_OK)
				fail_rv("C_CloseSession", rv);
		}
		if (initialized) {
			rv = f->C_Finalize(NULL);
			if (rv != CKR_OK)
				fail_rv("C_Finalize", rv);
		}
	}
	if (dl)
		dlclose(dl);
	free_options(&o);
	return ret;
}
