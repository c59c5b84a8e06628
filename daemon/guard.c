/* The pool's PIN counter and the login tickets (guard.h, docs/security.md). */
#include "guard.h"
#include "log.h"
#include "pin.h"
#include "thread.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DELAY_FIRST_MS 100
#define DELAY_MAX_MS   60000

/* The delay before the check that follows the n-th wrong PIN in a row. */
static uint64_t
delay_ns(unsigned n)
{
	uint64_t ms = DELAY_FIRST_MS;

	while (n-- > 1 && ms < DELAY_MAX_MS)
		ms *= 2;
	return (ms < DELAY_MAX_MS ? ms : DELAY_MAX_MS) * 1000000ull;
}

/* The state directory: made when missing, and refused when others could write to it (they
 * could reset the counter). */
static int
state_dir_ok(const char *dir, struct p11mux_err *e)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return p11mux_err_set(e, "%s: cannot create the state directory: %s", dir,
		                      strerror(errno));
	if (stat(dir, &st) != 0)
		return p11mux_err_set(e, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return p11mux_err_set(e, "%s: state_dir is not a directory", dir);
	if (st.st_uid != geteuid() || (st.st_mode & 022) != 0)
		return p11mux_err_set(
		        e,
		        "%s: the state directory must belong to the daemon's user and "
		        "not be writable by others (chown it, and chmod 700)",
		        dir);
	return 0;
}

/* STATE_DIR/pin.LABEL, with the label's bytes other than letters, digits, '-', '_' and '.'
 * written as %XX. */
static int
state_path(char *dst, size_t n, const char *dir, const char *prefix, const char *label)
{
	size_t k = (size_t)snprintf(dst, n, "%s/%s.", dir, prefix);
	const unsigned char *s;

	for (s = (const unsigned char *)label; *s != '\0' && k + 4 < n; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' ||
		    (*s == '.' && s != (const unsigned char *)label))
			dst[k++] = (char)*s;
		else
			k += (size_t)snprintf(dst + k, n - k, "%%%02X", *s);
	}
	dst[k] = '\0';
	return k + 4 < n ? 0 : -1;
}

/* Writes the counter: a new file, synced, renamed over the old one. Check lock held. */
static int
save(struct pin_guard *g, unsigned failures)
{
	char tmp[sizeof(g->path) + 8];
	FILE *f;
	int ok;

	snprintf(tmp, sizeof(tmp), "%s.new", g->path);
	if ((f = fopen(tmp, "we")) == NULL)
		goto fail;
	ok = fprintf(f, "failures %u\n", failures) > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0 || !ok || rename(tmp, g->path) != 0)
		goto fail;
	return 0;
fail:
	log_error("pool \"%s\": cannot save the PIN counter in %s: %s", g->label, g->path,
	          strerror(errno));
	unlink(tmp);
	return -1;
}

/* Reads the counter; a missing file is 0, a file that does not read as one locks the pool
 * (a guesser must not reset it by spoiling it). */
static void
load(struct pin_guard *g)
{
	unsigned n = 0;
	char extra;
	FILE *f;

	if ((f = fopen(g->path, "re")) == NULL) {
		if (errno != ENOENT) {
			log_error(
			        "pool \"%s\": cannot read the PIN counter %s: %s; taken as locked",
			        g->label, g->path, strerror(errno));
			g->failures = g->max;
		}
		return;
	}
	if (fscanf(f, "failures %u %c", &n, &extra) != 1) {
		log_error("pool \"%s\": %s does not hold a PIN counter; taken as locked (p11muxctl "
		          "unlock-pin resets it)",
		          g->label, g->path);
		n = g->max > 0 ? g->max : 1;
	}
	fclose(f);
	g->failures = n;
}

/* The ticket key: STATE_DIR/ticket.key, 32 random bytes made on first use. */
static int
load_key(struct pin_guard *g, const char *dir, struct p11mux_err *e)
{
	char path[4096];
	struct stat st;
	ssize_t got = 0;
	uint8_t extra;
	int fd;

	snprintf(path, sizeof(path), "%s/ticket.key", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0 && errno == ENOENT) {
		if (getrandom(g->key, sizeof(g->key), 0) != (ssize_t)sizeof(g->key))
			return p11mux_err_set(e, "getrandom: %s", strerror(errno));
		if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
		    write(fd, g->key, sizeof(g->key)) != (ssize_t)sizeof(g->key) ||
		    fsync(fd) != 0) {
			p11mux_err_set(e, "%s: cannot write the ticket key: %s", path,
			               strerror(errno));
			if (fd >= 0)
				close(fd);
			unlink(path);
			return -1;
		}
		close(fd);
		return 0;
	}
	if (fd < 0)
		return p11mux_err_set(e, "%s: %s", path, strerror(errno));
	/* Whoever can read it can make tickets; whoever can write it, void them. */
	if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		close(fd);
		return p11mux_err_set(e,
		                      "%s: the ticket key must belong to the daemon's user and be "
		                      "readable by nobody else (chown it, and chmod 600)",
		                      path);
	}
	got = read(fd, g->key, sizeof(g->key));
	if (got != (ssize_t)sizeof(g->key) || read(fd, &extra, 1) != 0) {
		close(fd);
		return p11mux_err_set(e,
		                      "%s: not a ticket key (32 bytes); remove it and a new one is "
		                      "made (applications then log in again)",
		                      path);
	}
	close(fd);
	return 0;
}

int
guard_open(struct pin_guard *g, const char *state_dir, const char *label, unsigned max,
           const char *pin, size_t pinlen, struct p11mux_err *e)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->check, NULL);
	pthread_mutex_init(&g->lock, NULL);
	lograte_init(&g->log_wrong, "wrong PINs");
	lograte_init(&g->log_refused, "logins refused (PIN locked)");
	g->label = label;
	g->max = max;
	SHA256((const unsigned char *)pin, pinlen, g->pin_hash);
	if (state_dir_ok(state_dir, e) != 0)
		return -1;
	if (state_path(g->path, sizeof(g->path), state_dir, "pin", label) != 0 ||
	    state_path(g->refused_path, sizeof(g->refused_path), state_dir, "refused", label) != 0)
		return p11mux_err_set(e, "%s: state_dir path too long", state_dir);
	if (load_key(g, state_dir, e) != 0)
		return -1;
	load(g);
	if (g->failures > 0) {
		/* A restart gives a guesser no fresh start: the delay holds from now. */
		g->next_ns = p11mux_now_ns() + delay_ns(g->failures);
		if (g->max > 0 && g->failures >= g->max)
			log_error(
			        "pool \"%s\": PIN locked after %u wrong PINs in a row (%s); logins "
			        "are refused until `p11muxctl unlock-pin \"%s\"`",
			        label, g->failures, g->path, label);
		else
			log_warn("pool \"%s\": %u wrong PIN(s) in a row before this start (%s)",
			         label, g->failures, g->path);
	}
	return 0;
}

void
guard_close(struct pin_guard *g)
{
	if (g->label == NULL)
		return;
	guard_flush(g);
	lograte_destroy(&g->log_wrong);
	lograte_destroy(&g->log_refused);
	OPENSSL_cleanse(g->key, sizeof(g->key));
	OPENSSL_cleanse(g->pin_hash, sizeof(g->pin_hash));
	pthread_mutex_destroy(&g->check);
	pthread_mutex_destroy(&g->lock);
	g->label = NULL;
}

/* The uid, and HMAC-SHA256 under the ticket key of: a tag, the pool's label, the uid and the
 * PIN's hash. A new PIN or a new key makes every ticket void. */
static void
make_ticket(const struct pin_guard *g, uid_t uid, uint8_t out[GUARD_TICKET_LEN])
{
	static const char tag[] = "p11mux ticket 1";
	uint8_t msg[sizeof(tag) + 33 + 4 + 32];
	size_t n = 0, llen = strlen(g->label);
	unsigned len = GUARD_TICKET_LEN - 4;
	uint32_t u = (uint32_t)uid;

	memcpy(msg, tag, sizeof(tag));
	n += sizeof(tag);
	memcpy(msg + n, g->label, llen + 1);
	n += llen + 1;
	memcpy(msg + n, &u, 4);
	n += 4;
	memcpy(msg + n, g->pin_hash, 32);
	n += 32;
	memcpy(out, &u, 4);
	HMAC(EVP_sha256(), g->key, sizeof(g->key), msg, n, out + 4, &len);
	OPENSSL_cleanse(msg, sizeof(msg));
}

/* The refused PIN's fingerprint, as hex: an HMAC of the pool's label and PIN's hash. */
static void
refused_fingerprint(const struct pin_guard *g, char hex[65])
{
	static const char tag[] = "p11mux refused PIN 1";
	uint8_t msg[sizeof(tag) + 33 + 32], mac[32];
	size_t n = 0, llen = strlen(g->label), i;
	unsigned len = sizeof(mac);

	memcpy(msg, tag, sizeof(tag));
	n += sizeof(tag);
	memcpy(msg + n, g->label, llen + 1);
	n += llen + 1;
	memcpy(msg + n, g->pin_hash, 32);
	n += 32;
	HMAC(EVP_sha256(), g->key, sizeof(g->key), msg, n, mac, &len);
	OPENSSL_cleanse(msg, sizeof(msg));
	for (i = 0; i < sizeof(mac); i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

int
guard_pin_refused(struct pin_guard *g)
{
	char want[65], line[128], got[80];
	FILE *f;
	int same = 0;

	if ((f = fopen(g->refused_path, "re")) == NULL)
		return 0;
	refused_fingerprint(g, want);
	if (fgets(line, sizeof(line), f) != NULL && sscanf(line, "refused %70s", got) == 1)
		same = strcmp(got, want) == 0;
	fclose(f);
	return same;
}

int
guard_refuse_pin(struct pin_guard *g, struct p11mux_err *e)
{
	char tmp[sizeof(g->refused_path) + 8], hex[65];
	FILE *f;
	int ok;

	refused_fingerprint(g, hex);
	snprintf(tmp, sizeof(tmp), "%s.new", g->refused_path);
	if ((f = fopen(tmp, "we")) == NULL)
		return p11mux_err_set(e, "%s: %s", tmp, strerror(errno));
	ok = fprintf(f, "refused %s\n", hex) > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0 || !ok || rename(tmp, g->refused_path) != 0) {
		unlink(tmp);
		return p11mux_err_set(e, "%s: %s", g->refused_path, strerror(errno));
	}
	return 0;
}

void
guard_pin_accepted(struct pin_guard *g)
{
	if (unlink(g->refused_path) != 0 && errno != ENOENT)
		log_warn("pool \"%s\": cannot remove %s: %s", g->label, g->refused_path,
		         strerror(errno));
}

/* Whether t is a ticket of this pool's key and PIN; *uid the user it was given to. */
static int
ticket_ok(const struct pin_guard *g, const uint8_t *t, size_t tlen, uid_t *uid)
{
	uint8_t want[GUARD_TICKET_LEN];
	uint32_t u;
	int ok;

	if (tlen != GUARD_TICKET_LEN)
		return 0;
	memcpy(&u, t, 4);
	*uid = (uid_t)u;
	make_ticket(g, *uid, want);
	ok = CRYPTO_memcmp(want, t, GUARD_TICKET_LEN) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	return ok;
}

/* Logs a wrong PIN or a refused login: at most a few lines a second of each kind, the rest
 * summed up (lograte.c). The line that locks the pool is always logged. */
static void
log_attempt(struct pin_guard *g, int locked, unsigned failures, uid_t uid, pid_t pid)
{
	if (locked)
		lograte_warn(
		        &g->log_refused,
		        "pool \"%s\": login refused for uid %lu pid %ld: PIN locked (p11muxctl "
		        "unlock-pin)",
		        g->label, (unsigned long)uid, (long)pid);
	else if (g->max > 0 && failures >= g->max)
		log_error(
		        "pool \"%s\": wrong PIN from uid %lu pid %ld, %u in a row: the pool's PIN "
		        "is locked; logins are refused until `p11muxctl unlock-pin \"%s\"` "
		        "(applications logged in keep working)",
		        g->label, (unsigned long)uid, (long)pid, failures, g->label);
	else
		lograte_warn(
		        &g->log_wrong,
		        "pool \"%s\": wrong PIN from uid %lu pid %ld, %u in a row (not sent to "
		        "any device; the next check waits %llu ms)",
		        g->label, (unsigned long)uid, (long)pid, failures,
		        (unsigned long long)(delay_ns(failures) / 1000000u));
}

int
guard_flush(struct pin_guard *g)
{
	return lograte_flush(&g->log_wrong) | lograte_flush(&g->log_refused);
}

/* The counted check: serialised, after the delay the last failure set. */
static CK_RV
check_pin(struct pin_guard *g, const char *pool_pin, size_t pool_pinlen, const uint8_t *pin,
          size_t pinlen, uid_t uid, pid_t pid)
{
	struct timespec until;
	unsigned failures;
	uint64_t next;
	int locked, ok;

	p11mux_lock(&g->check);
	p11mux_lock(&g->lock);
	locked = g->max > 0 && g->failures >= g->max;
	g->refused += (uint64_t)locked;
	next = g->next_ns;
	p11mux_unlock(&g->lock);
	if (locked) {
		p11mux_unlock(&g->check);
		log_attempt(g, 1, 0, uid, pid);
		return CKR_PIN_LOCKED;
	}
	if (next > p11mux_now_ns()) {
		until.tv_sec = (time_t)(next / 1000000000u);
		until.tv_nsec = (long)(next % 1000000000u);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
			;
	}
	ok = pin_equal((const char *)pin, pinlen, pool_pin, pool_pinlen);
	p11mux_lock(&g->lock);
	failures = g->failures;
	if (ok) {
		g->failures = 0;
		g->next_ns = 0;
	} else {
		g->failures++;
		g->wrong++;
		g->next_ns = p11mux_now_ns() + delay_ns(g->failures);
	}
	p11mux_unlock(&g->lock);
	if (!ok || failures != 0)
		save(g, ok ? 0 : failures + 1);
	p11mux_unlock(&g->check);
	if (!ok) {
		log_attempt(g, 0, failures + 1, uid, pid);
		return CKR_PIN_INCORRECT;
	}
	if (failures != 0)
		log_info(
		        "pool \"%s\": right PIN from uid %lu pid %ld after %u wrong; counter reset",
		        g->label, (unsigned long)uid, (long)pid, failures);
	return CKR_OK;
}

/* The right PIN came with a valid ticket: the counter is reset, as a right PIN resets a
 * device's, unless the PIN is locked (a lockout ends with p11muxctl unlock-pin only). */
static void
right_pin_with_ticket(struct pin_guard *g, uid_t uid, pid_t pid)
{
	unsigned failures;

	p11mux_lock(&g->check);
	p11mux_lock(&g->lock);
	failures = g->failures;
	if (g->max > 0 && failures >= g->max)
		failures = 0;
	if (failures != 0) {
		g->failures = 0;
		g->next_ns = 0;
	}
	p11mux_unlock(&g->lock);
	if (failures != 0)
		save(g, 0);
	p11mux_unlock(&g->check);
	if (failures != 0)
		log_info(
		        "pool \"%s\": right PIN from uid %lu pid %ld after %u wrong; counter reset",
		        g->label, (unsigned long)uid, (long)pid, failures);
}

CK_RV
guard_login(struct pin_guard *g, const char *pool_pin, size_t pool_pinlen, const uint8_t *pin,
            size_t pinlen, const uint8_t *ticket, size_t ticketlen, uid_t uid, pid_t pid,
            uint8_t ticket_out[GUARD_TICKET_LEN])
{
	uid_t holder = (uid_t)-1;
	CK_RV rv;

	if (ticket_ok(g, ticket, ticketlen, &holder)) {
		/* A process of this user was logged in (the PIN is unchanged): its new
		 * connections need no PIN; its children (perhaps another user now) give the
		 * PIN, which is checked, but neither wait nor are stopped by a lockout. A wrong
		 * PIN goes the counted way below. */
		if ((pinlen == 0 && holder == uid) ||
		    (pinlen > 0 && pin_equal((const char *)pin, pinlen, pool_pin, pool_pinlen))) {
			if (pinlen > 0)
				right_pin_with_ticket(g, uid, pid);
			make_ticket(g, uid, ticket_out);
			return CKR_OK;
		}
	}
	if (pinlen == 0) {
		/* A ticket alone that is not valid (a new key, a new PIN, another user): no PIN
		 * was tried, nothing is counted. */
		return CKR_PIN_INCORRECT;
	}
	if ((rv = check_pin(g, pool_pin, pool_pinlen, pin, pinlen, uid, pid)) == CKR_OK)
		make_ticket(g, uid, ticket_out);
	return rv;
}

CK_FLAGS
guard_flags(struct pin_guard *g)
{
	CK_FLAGS f = 0;
	unsigned n;

	p11mux_lock(&g->lock);
	n = g->failures;
	p11mux_unlock(&g->lock);
	if (n > 0)
		f |= CKF_USER_PIN_COUNT_LOW;
	if (g->max > 0 && n >= g->max)
		f |= CKF_USER_PIN_LOCKED;
	else if (g->max > 0 && n + 1 == g->max)
		f |= CKF_USER_PIN_FINAL_TRY;
	return f;
}

unsigned
guard_failures(struct pin_guard *g, int *locked)
{
	unsigned n;

	p11mux_lock(&g->lock);
	n = g->failures;
	p11mux_unlock(&g->lock);
	*locked = g->max > 0 && n >= g->max;
	return n;
}

int
guard_unlock(struct pin_guard *g, struct p11mux_err *e)
{
	unsigned before;
	int r;

	p11mux_lock(&g->check);
	p11mux_lock(&g->lock);
	before = g->failures;
	g->failures = 0;
	g->next_ns = 0;
	p11mux_unlock(&g->lock);
	r = save(g, 0);
	p11mux_unlock(&g->check);
	if (r != 0)
		return p11mux_err_set(e, "cannot save %s: %s", g->path, strerror(errno));
	log_info("pool \"%s\": PIN counter reset by p11muxctl unlock-pin (was %u)", g->label,
	         before);
	return 0;
}
