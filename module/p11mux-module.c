/*
 * p11mux-pkcs11.so: the PKCS#11 entry points. Everything an application asks that the shim
 * can answer from what it holds (sessions, pending operations, the slot list, cached
 * objects) is answered here; what needs the pool becomes one self-contained request to the
 * daemon. Starts no threads.
 */
#include "module.h"
#include "err.h"
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

struct shim shim = {.lock = PTHREAD_MUTEX_INITIALIZER};

void
shim_lock(void)
{
	p11mux_lock(&shim.lock);
}

void
shim_unlock(void)
{
	p11mux_unlock(&shim.lock);
}

void
shim_debug(const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	if (secure_getenv("P11MUX_DEBUG") == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "p11mux-pkcs11[%ld]: %s\n", (long)getpid(), msg);
}

void
shim_refused(const char *func, CK_RV rv, const char *why)
{
	/* Applications rarely write to an HSM; when one tries, its log should say why it
	 * failed. Once per function and process is enough. */
	static const char *said[16];
	static size_t nsaid;
	size_t i;
	int first;

	shim_lock();
	for (i = 0; i < nsaid; i++)
		if (said[i] == func)
			break;
	first = i == nsaid && !shim.quiet;
	if (i == nsaid && nsaid < 16)
		said[nsaid++] = func;
	shim_unlock();
	if (first || secure_getenv("P11MUX_DEBUG") != NULL)
		fprintf(stderr, "p11mux-pkcs11: %s refused (%s): %s\n", func, p11mux_rv_name(rv),
		        why);
}

static int
entered(void)
{
	return shim.initialized && shim.pid == getpid();
}

#define ENTER()                                                                                    \
	do {                                                                                       \
		if (!entered())                                                                    \
			return CKR_CRYPTOKI_NOT_INITIALIZED;                                       \
	} while (0)

/* reconnect_ms from the parameters, else $P11MUX_RECONNECT_MS, else the default. */
static unsigned
reconnect_ms(const char *params)
{
	char *v = params != NULL ? params_get(params, "reconnect_ms") : NULL;
	const char *e = v != NULL ? v : secure_getenv("P11MUX_RECONNECT_MS");
	unsigned long ms = SHIM_DEFAULT_RECONNECT_MS;
	char *endp;

	if (e != NULL && *e != '\0') {
		ms = strtoul(e, &endp, 10);
		if (*endp != '\0' || ms > 600000)
			ms = SHIM_DEFAULT_RECONNECT_MS;
	}
	free(v);
	return (unsigned)ms;
}

static void
free_session(uint64_t key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	session_free(value);
}

static void
slot_logout_locked(size_t idx)
{
	struct slot *sl = &shim.slots[idx];

	explicit_bzero(sl->ticket, sizeof(sl->ticket));
	if (sl->logged_in) {
		sl->logged_in = 0;
		shim.auth_gen++;
		conn_close_idle_locked();
		cache_clear_objects_locked();
	}
}

static void
write_stats_locked(void)
{
	const char *path = secure_getenv("P11MUX_STATS");
	uint64_t total = 0;
	FILE *f;
	int i;

	if (path == NULL || (f = fopen(path, "a")) == NULL)
		return;
	fprintf(f, "pid=%ld", (long)getpid());
	for (i = 1; i < P11MUX_CALL_COUNT; i++) {
		fprintf(f, " %s=%llu", p11mux_calls[i].name, (unsigned long long)shim.calls[i]);
		total += shim.calls[i];
	}
	fprintf(f, " total=%llu\n", (unsigned long long)total);
	fclose(f);
}

/* Checks C_Initialize's arguments; *params gets a copy of the parameter string in
 * pReserved (NULL when there is none), which the caller frees. */
static CK_RV
init_args(const CK_C_INITIALIZE_ARGS *args, char **params)
{
	int nfn;

	*params = NULL;
	if (args == NULL)
		return CKR_OK;
	nfn = (args->CreateMutex != NULL) + (args->DestroyMutex != NULL) +
	      (args->LockMutex != NULL) + (args->UnlockMutex != NULL);
	if (nfn != 0 && nfn != 4)
		return CKR_ARGUMENTS_BAD;
	/* We lock with pthreads; an application that insists on its own mutexes without
	 * allowing OS locking cannot be served. */
	if (nfn == 4 && !(args->flags & CKF_OS_LOCKING_OK))
		return CKR_CANT_LOCK;
	/* NSS passes its LibraryParameters string here, p11-kit its x-init-reserved; anything
	 * else (PKCS#11 wants NULL) must not crash us. */
	if (args->pReserved != NULL)
		return params_copy(args->pReserved, params);
	return CKR_OK;
}

/* The daemon's socket: socket= in the parameters, else $P11MUX_SOCKET, else the default.
 * A copy, or NULL when memory ran out. */
/* quiet=1 (or yes, true) among the module's parameters, or P11MUX_QUIET=1. */
static int
quiet(const char *params)
{
	char *v = params != NULL ? params_get(params, "quiet") : NULL;
	const char *e = v != NULL ? v : secure_getenv("P11MUX_QUIET");
	int q = e != NULL &&
	        (strcmp(e, "1") == 0 || strcmp(e, "yes") == 0 || strcmp(e, "true") == 0);

	free(v);
	return q;
}

static char *
socket_path(const char *params)
{
	char *path = params != NULL ? params_get(params, "socket") : NULL;
	const char *env;

	if (path != NULL && *path == '\0') {
		free(path);
		path = NULL;
	}
	if (path == NULL && (env = secure_getenv("P11MUX_SOCKET")) != NULL && *env != '\0')
		path = strdup(env);
	if (path == NULL)
		path = strdup(SHIM_DEFAULT_SOCKET);
	return path;
}

static CK_RV
mux_Initialize(CK_VOID_PTR pInitArgs)
{
	char *path, *params;
	pid_t pid = getpid();
	CK_RV rv;

	if ((rv = init_args(pInitArgs, &params)) != CKR_OK)
		return rv;
	if (shim.initialized && shim.pid == pid) {
		free(params);
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	}
	if (shim.initialized) {
		/* A child after fork: the parent's lock may have been held by another of its
		 * threads, and its connections belong to the parent. Start over. */
		pthread_mutex_init(&shim.lock, NULL);
		shim_lock();
		conn_close_all_locked(1);
		shim_unlock();
		memset(&shim.slots, 0, sizeof(shim.slots));
		shim.sessions = NULL;
		shim.objects = NULL;
		shim.socket_path = NULL;
		shim.initialized = 0;
	}

	path = socket_path(params);
	shim_lock();
	shim.socket_path = path;
	shim.sessions = p11mux_hmap_new();
	shim.objects = p11mux_hmap_new();
	if (path == NULL || shim.sessions == NULL || shim.objects == NULL) {
		free(path);
		p11mux_hmap_free(shim.sessions);
		p11mux_hmap_free(shim.objects);
		shim.sessions = shim.objects = NULL;
		shim.socket_path = NULL;
		shim_unlock();
		free(params);
		return CKR_HOST_MEMORY;
	}
	shim.reconnect_ms = reconnect_ms(params);
	shim.quiet = quiet(params);
	/* This process's id as an application of the daemon (a child after fork gets its own). */
	if (getrandom(&shim.client_id, sizeof(shim.client_id), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(shim.client_id))
		shim.client_id = ((uint64_t)pid << 32) ^ (uint64_t)time(NULL) ^ (uintptr_t)&pid;
	shim.have_instance = 0;
	shim.next_session = 1;
	shim.auth_gen = 1;
	shim.nslots = 0;
	shim.have_slots = 0;
	memset(shim.calls, 0, sizeof(shim.calls));
	shim.pid = pid;
	shim.initialized = 1;
	shim_unlock();
	free(params);
	shim_debug("initialised, daemon socket %s", path);
	return CKR_OK;
}

static void drop_objects(CK_SLOT_ID slot, CK_SESSION_HANDLE session);

static CK_RV
mux_Finalize(CK_VOID_PTR pReserved)
{
	CK_SLOT_ID drop[SHIM_MAX_SLOTS];
	size_t i, ndrop = 0;

	if (pReserved != NULL)
		return CKR_ARGUMENTS_BAD;
	ENTER();
	/* The application's session objects end (PKCS#11 2.40, 4.4), while there is a
	 * connection to say so. */
	shim_lock();
	for (i = 0; i < shim.nslots; i++)
		if (shim.slots[i].made_objects)
			drop[ndrop++] = shim.slots[i].info.id;
	shim_unlock();
	for (i = 0; i < ndrop; i++)
		drop_objects(drop[i], 0);
	shim_lock();
	write_stats_locked();
	conn_close_all_locked(0);
	p11mux_hmap_foreach(shim.sessions, free_session, NULL);
	p11mux_hmap_free(shim.sessions);
	shim.sessions = NULL;
	cache_clear_objects_locked();
	p11mux_hmap_free(shim.objects);
	shim.objects = NULL;
	for (i = 0; i < shim.nslots; i++) {
		shim.slots[i].logged_in = 0;
		slot_logout_locked(i);
		free(shim.slots[i].info.mechs);
		free(shim.slots[i].info.infos);
	}
	memset(&shim.slots, 0, sizeof(shim.slots));
	shim.nslots = 0;
	free(shim.socket_path);
	shim.socket_path = NULL;
	shim.initialized = 0;
	shim_unlock();
	return CKR_OK;
}

static CK_RV
mux_GetInfo(CK_INFO_PTR pInfo)
{
	ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->cryptokiVersion.major = 2;
	pInfo->cryptokiVersion.minor = 40;
	p11mux_pad(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), "p11mux");
	p11mux_pad(pInfo->libraryDescription, sizeof(pInfo->libraryDescription),
	           "p11mux pooled HSM client");
	pInfo->libraryVersion.major = 0;
	pInfo->libraryVersion.minor = 1;
	return CKR_OK;
}

static CK_RV
mux_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount)
{
	CK_RV rv;
	size_t i;

	(void)tokenPresent; /* a pool's token is always present */
	ENTER();
	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	/* The size query refreshes; the call with a buffer reuses that answer. */
	rv = pSlotList == NULL ? cache_refresh_slots() : cache_need_slots();
	shim_lock();
	if (rv != CKR_OK && !shim.have_slots) {
		shim_unlock();
		return rv == CKR_DEVICE_ERROR ? CKR_FUNCTION_FAILED : rv;
	}
	rv = CKR_OK;
	if (pSlotList != NULL) {
		if (*pulCount < shim.nslots)
			rv = CKR_BUFFER_TOO_SMALL;
		else
			for (i = 0; i < shim.nslots; i++)
				pSlotList[i] = shim.slots[i].info.id;
	}
	*pulCount = shim.nslots;
	shim_unlock();
	return rv;
}

/* Index of slotID after making sure the slot list is known; -1 if unknown. */
static int
slot_index(CK_SLOT_ID slotID, CK_RV *rv)
{
	int idx;

	if ((*rv = cache_need_slots()) != CKR_OK)
		return -1;
	shim_lock();
	idx = cache_slot_index_locked(slotID);
	shim_unlock();
	if (idx < 0)
		*rv = CKR_SLOT_ID_INVALID;
	return idx;
}

static CK_RV
mux_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
	CK_RV rv;
	int idx;

	ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((idx = slot_index(slotID, &rv)) < 0)
		return rv;
	shim_lock();
	*pInfo = shim.slots[idx].info.slot;
	shim_unlock();
	return CKR_OK;
}

struct rw_count {
	CK_SLOT_ID slot;
	CK_ULONG n;
};

static void
count_rw_session(uint64_t key, void *value, void *arg)
{
	const struct session *s = value;
	struct rw_count *rc = arg;

	(void)key;
	if (s->slot == rc->slot && (s->flags & CKF_RW_SESSION))
		rc->n++;
}

static CK_RV
mux_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
	struct rw_count rc = {slotID, 0};
	CK_RV rv;
	int idx;

	ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((idx = slot_index(slotID, &rv)) < 0)
		return rv;
	shim_lock();
	*pInfo = shim.slots[idx].info.token;
	/* This process's sessions, as a device counts an application's (SoftHSM says
	 * CK_UNAVAILABLE_INFORMATION). */
	p11mux_hmap_foreach(shim.sessions, count_rw_session, &rc);
	pInfo->ulSessionCount = shim.slots[idx].nsessions;
	pInfo->ulRwSessionCount = rc.n;
	shim_unlock();
	return CKR_OK;
}

static CK_RV
mux_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pList, CK_ULONG_PTR pulCount)
{
	CK_RV rv = CKR_OK;
	struct slot *sl;
	int idx;

	ENTER();
	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((idx = slot_index(slotID, &rv)) < 0)
		return rv;
	shim_lock();
	sl = &shim.slots[idx];
	if (pList != NULL) {
		if (*pulCount < sl->info.nmechs)
			rv = CKR_BUFFER_TOO_SMALL;
		else
			memcpy(pList, sl->info.mechs, sl->info.nmechs * sizeof(*pList));
	}
	*pulCount = sl->info.nmechs;
	shim_unlock();
	return rv;
}

/* Index of mechanism type in a slot's list, or -1. Lock held. */
static int
mech_index_locked(int idx, CK_MECHANISM_TYPE type)
{
	CK_ULONG i;

	for (i = 0; i < shim.slots[idx].info.nmechs; i++)
		if (shim.slots[idx].info.mechs[i] == type)
			return (int)i;
	return -1;
}

static CK_RV
mux_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo)
{
	CK_RV rv = CKR_OK;
	int idx, m;

	ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((idx = slot_index(slotID, &rv)) < 0)
		return rv;
	shim_lock();
	if ((m = mech_index_locked(idx, type)) < 0)
		rv = CKR_MECHANISM_INVALID;
	else
		*pInfo = shim.slots[idx].info.infos[m];
	shim_unlock();
	return rv;
}

/* The slot index of a session, or -1 when the handle is invalid. Lock held. */
static int
session_slot_locked(CK_SESSION_HANDLE h, struct session **out)
{
	struct session *s = session_get_locked(h);

	if (s == NULL)
		return -1;
	if (out != NULL)
		*out = s;
	return cache_slot_index_locked(s->slot);
}

/* The slot of a session: CKR_OK, or CKR_SESSION_HANDLE_INVALID. */
static CK_RV
session_slot(CK_SESSION_HANDLE h, CK_SLOT_ID *slot)
{
	struct session *s;
	CK_RV rv = CKR_SESSION_HANDLE_INVALID;

	shim_lock();
	if ((s = session_get_locked(h)) != NULL) {
		*slot = s->slot;
		rv = CKR_OK;
	}
	shim_unlock();
	return rv;
}

/* Checks a session handle, for the calls that the pool refuses anyway. */
static CK_RV
check_session(CK_SESSION_HANDLE h)
{
	int idx;

	shim_lock();
	idx = session_slot_locked(h, NULL);
	shim_unlock();
	return idx < 0 ? CKR_SESSION_HANDLE_INVALID : CKR_OK;
}

/* Whether a template asks for a token object (CKA_TOKEN true). */
static int
wants_token(const CK_ATTRIBUTE *t, CK_ULONG n)
{
	CK_ULONG i;

	for (i = 0; t != NULL && i < n; i++)
		if (t[i].type == CKA_TOKEN && t[i].pValue != NULL &&
		    t[i].ulValueLen == sizeof(CK_BBOOL))
			return *(const CK_BBOOL *)t[i].pValue != CK_FALSE;
	return 0;
}

/* Refuses a change to the pool's tokens. A change to a token object in a read-only session
 * gets CKR_SESSION_READ_ONLY first, as on a device (PKCS#11 2.40, 5.6). */
static CK_RV
refuse_write(CK_SESSION_HANDLE h, const char *func, int token)
{
	struct session *s;
	CK_RV rv = CKR_OK;

	ENTER();
	shim_lock();
	if (session_slot_locked(h, &s) < 0)
		rv = CKR_SESSION_HANDLE_INVALID;
	else if (token && !(s->flags & CKF_RW_SESSION))
		rv = CKR_SESSION_READ_ONLY;
	shim_unlock();
	if (rv != CKR_OK)
		return rv;
	shim_refused(func, CKR_TOKEN_WRITE_PROTECTED,
	             "the pool is read-only; change keys on the devices, then restart p11muxd");
	return CKR_TOKEN_WRITE_PROTECTED;
}

static CK_RV
mux_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel)
{
	CK_RV rv;

	(void)pPin;
	(void)ulPinLen;
	(void)pLabel;
	ENTER();
	if (slot_index(slotID, &rv) < 0)
		return rv;
	shim_refused("C_InitToken", CKR_TOKEN_WRITE_PROTECTED,
	             "a pool cannot be initialised; initialise its devices one by one");
	return CKR_TOKEN_WRITE_PROTECTED;
}

/* C_InitPIN needs the SO logged in (PKCS#11 2.40, 5.6), which a pool never is. */
static CK_RV
mux_InitPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	CK_RV rv;

	(void)pPin;
	(void)ulPinLen;
	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	return CKR_USER_NOT_LOGGED_IN;
}

static CK_RV
mux_SetPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin,
           CK_ULONG ulNewLen)
{
	(void)pOldPin;
	(void)ulOldLen;
	(void)pNewPin;
	(void)ulNewLen;
	return refuse_write(h, "C_SetPIN", 1);
}

static CK_RV
mux_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                CK_SESSION_HANDLE_PTR phSession)
{
	struct session *s;
	CK_RV rv;
	int idx;

	(void)pApplication;
	(void)Notify;
	ENTER();
	if (phSession == NULL)
		return CKR_ARGUMENTS_BAD;
	if (!(flags & CKF_SERIAL_SESSION))
		return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
	if ((idx = slot_index(slotID, &rv)) < 0)
		return rv;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return CKR_HOST_MEMORY;
	s->slot = slotID;
	s->flags = flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION);
	shim_lock();
	s->handle = shim.next_session++;
	if (shim.next_session == 0 || shim.next_session > 0xffffffffUL)
		shim.next_session = 1;
	if (p11mux_hmap_put(shim.sessions, s->handle, s) != 0) {
		shim_unlock();
		free(s);
		return CKR_HOST_MEMORY;
	}
	shim.slots[idx].nsessions++;
	*phSession = s->handle;
	shim_unlock();
	return CKR_OK;
}

/* Removes a session; the last one of a slot logs the application out (PKCS#11 2.40, 5.6). */
static void
close_session_locked(struct session *s)
{
	int idx = cache_slot_index_locked(s->slot);

	p11mux_hmap_remove(shim.sessions, s->handle);
	if (idx >= 0 && --shim.slots[idx].nsessions == 0)
		slot_logout_locked((size_t)idx);
	session_free(s);
}

static CK_RV
mux_CloseSession(CK_SESSION_HANDLE h)
{
	struct session *s;
	CK_SLOT_ID slot;
	int made;

	ENTER();
	shim_lock();
	if ((s = session_get_locked(h)) == NULL) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	made = s->made_objects;
	slot = s->slot;
	close_session_locked(s);
	shim_unlock();
	/* Its session objects end with it (PKCS#11 2.40, 4.4). */
	if (made)
		drop_objects(slot, h);
	return CKR_OK;
}

struct collect {
	CK_SLOT_ID slot;
	struct session **v;
	size_t n;
};

static void
collect_slot_sessions(uint64_t key, void *value, void *arg)
{
	struct collect *c = arg;
	struct session *s = value;

	(void)key;
	if (s->slot == c->slot)
		c->v[c->n++] = s;
}

static CK_RV
mux_CloseAllSessions(CK_SLOT_ID slotID)
{
	struct collect c = {slotID, NULL, 0};
	CK_RV rv = CKR_OK;
	size_t i;

	ENTER();
	if (slot_index(slotID, &rv) < 0)
		return rv;
	shim_lock();
	if ((c.v = calloc(p11mux_hmap_count(shim.sessions) + 1, sizeof(*c.v))) == NULL) {
		shim_unlock();
		return CKR_HOST_MEMORY;
	}
	int made = 0;

	p11mux_hmap_foreach(shim.sessions, collect_slot_sessions, &c);
	for (i = 0; i < c.n; i++) {
		made |= c.v[i]->made_objects;
		close_session_locked(c.v[i]);
	}
	shim_unlock();
	free(c.v);
	if (made)
		drop_objects(slotID, 0);
	return CKR_OK;
}

static CK_RV
mux_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR pInfo)
{
	struct session *s;
	int idx, rw, user;

	ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((idx = session_slot_locked(h, &s)) < 0) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	rw = (s->flags & CKF_RW_SESSION) != 0;
	user = shim.slots[idx].logged_in;
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->slotID = s->slot;
	pInfo->flags = s->flags;
	pInfo->state = rw ? (user ? CKS_RW_USER_FUNCTIONS : CKS_RW_PUBLIC_SESSION)
	                  : (user ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION);
	shim_unlock();
	return CKR_OK;
}

static CK_RV
mux_GetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR pState, CK_ULONG_PTR pulLen)
{
	CK_RV rv;

	(void)pState;
	(void)pulLen;
	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV
mux_SetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR pState, CK_ULONG ulLen,
                      CK_OBJECT_HANDLE hEnc, CK_OBJECT_HANDLE hAuth)
{
	CK_RV rv;

	(void)pState;
	(void)ulLen;
	(void)hEnc;
	(void)hAuth;
	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	return CKR_FUNCTION_NOT_SUPPORTED;
}

/* A LOGIN request. */
struct login_call {
	CK_SLOT_ID slot;
	CK_USER_TYPE user;
	const CK_UTF8CHAR *pin;
	CK_ULONG len;
	uint8_t kept[SHIM_TICKET_LEN]; /* this process's or its parent's ticket */
	size_t keptlen;
};

/* The kept ticket of slot id, or -1. Lock held. */
static int
kept_index_locked(CK_SLOT_ID id)
{
	size_t i;

	for (i = 0; i < shim.nkept; i++)
		if (shim.kept[i].id == id)
			return (int)i;
	return -1;
}

static void
put_login(struct p11mux_msg *m, void *arg)
{
	const struct login_call *lc = arg;

	p11mux_msg_put_ulong(m, lc->slot);
	p11mux_msg_put_ulong(m, lc->user);
	p11mux_msg_put_bytes(m, lc->pin, lc->len);
	p11mux_msg_put_bytes(m, lc->kept, lc->keptlen);
}

/* Keeps the daemon's ticket for slot idx: for new connections, and for a child. Lock held. */
static void
keep_ticket_locked(int idx, const uint8_t *t)
{
	int k = kept_index_locked(shim.slots[idx].info.id);

	memcpy(shim.slots[idx].ticket, t, SHIM_TICKET_LEN);
	if (k < 0 && shim.nkept < SHIM_MAX_SLOTS) {
		k = (int)shim.nkept++;
		shim.kept[k].id = shim.slots[idx].info.id;
	}
	if (k >= 0)
		memcpy(shim.kept[k].ticket, t, SHIM_TICKET_LEN);
}

/* The daemon logged connection c in: the application is logged in, and the daemon's ticket
 * (not the PIN) is kept to log in connections opened later (and after a daemon restart). */
static CK_RV
got_login(struct p11mux_msg *m, struct conn *c, void *arg)
{
	const struct login_call *lc = arg;
	const uint8_t *t = NULL;
	size_t tlen = 0;
	int idx;
	CK_RV rv = CKR_OK;

	if (p11mux_msg_get_bytes(m, &t, &tlen) != 0 || tlen != SHIM_TICKET_LEN)
		return CKR_DEVICE_ERROR;
	shim_lock();
	if ((idx = cache_slot_index_locked(lc->slot)) < 0) {
		rv = CKR_SLOT_ID_INVALID;
	} else {
		/* Recorded whatever happens below: a connection logged in that the application
		 * does not count as logged in is logged out before its next use. */
		c->logged_in[idx] = 1;
		if (shim.slots[idx].logged_in) {
			rv = CKR_USER_ALREADY_LOGGED_IN;
		} else {
			keep_ticket_locked(idx, t);
			shim.slots[idx].logged_in = 1;
			shim.auth_gen++;
		}
	}
	shim_unlock();
	return rv;
}

struct ro_count {
	CK_SLOT_ID slot;
	size_t n;
};

static void
count_ro_session(uint64_t key, void *value, void *arg)
{
	const struct session *s = value;
	struct ro_count *rc = arg;

	(void)key;
	if (s->slot == rc->slot && !(s->flags & CKF_RW_SESSION))
		rc->n++;
}

/* The login rules of PKCS#11 2.40 (5.6, C_Login) that need no PIN: the user is logged in
 * already (on any session of the slot), or an SO login while a read-only session is open.
 * Lock held. */
static CK_RV
login_state_locked(int idx, CK_USER_TYPE user)
{
	struct ro_count rc = {shim.slots[idx].info.id, 0};

	if (shim.slots[idx].logged_in)
		return user == CKU_SO ? CKR_USER_ANOTHER_ALREADY_LOGGED_IN
		                      : CKR_USER_ALREADY_LOGGED_IN;
	if (user == CKU_SO) {
		p11mux_hmap_foreach(shim.sessions, count_ro_session, &rc);
		if (rc.n > 0)
			return CKR_SESSION_READ_ONLY_EXISTS;
	}
	return CKR_OK;
}

static CK_RV
mux_Login(CK_SESSION_HANDLE h, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	struct login_call lc = {0, userType, pPin, ulPinLen, {0}, 0};
	CK_FLAGS counters;
	int idx, k;
	CK_RV rv;

	ENTER();
	shim_lock();
	if ((idx = session_slot_locked(h, NULL)) < 0) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	lc.slot = shim.slots[idx].info.id;
	rv = login_state_locked(idx, userType);
	counters = shim.slots[idx].info.token.flags &
	           (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED);
	if ((k = kept_index_locked(lc.slot)) >= 0) {
		memcpy(lc.kept, shim.kept[k].ticket, SHIM_TICKET_LEN);
		lc.keptlen = SHIM_TICKET_LEN;
	}
	shim_unlock();
	if (userType == CKU_CONTEXT_SPECIFIC)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (userType != CKU_USER && userType != CKU_SO)
		return CKR_USER_TYPE_INVALID;
	if (rv != CKR_OK)
		return rv;
	/* The pool keeps its devices' SO PINs out of reach: a wrong SO PIN tried on every
	 * member could lock them all, and a locked SO PIN cannot be reset. */
	if (userType == CKU_SO) {
		shim_refused("C_Login", CKR_USER_TYPE_INVALID,
		             "SO login is not offered by a pool; use the devices' own tools");
		return CKR_USER_TYPE_INVALID;
	}
	if (pPin == NULL)
		return CKR_ARGUMENTS_BAD; /* no protected authentication path */
	if (ulPinLen == 0 || ulPinLen > SHIM_MAX_PIN)
		return CKR_PIN_LEN_RANGE;
	rv = shim_call(P11MUX_CALL_LOGIN, put_login, got_login, &lc);
	explicit_bzero(lc.kept, sizeof(lc.kept));
	/* The token flags now show the pool's PIN counter (CKF_USER_PIN_COUNT_LOW, ...); after a
	 * good login, a counter the cached flags showed is reset. */
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || (rv == CKR_OK && counters != 0))
		cache_refresh_slots();
	return rv;
}

static CK_RV
mux_Logout(CK_SESSION_HANDLE h)
{
	CK_SLOT_ID slot;
	int idx, k, made;

	ENTER();
	shim_lock();
	if ((idx = session_slot_locked(h, NULL)) < 0) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	if (!shim.slots[idx].logged_in) {
		shim_unlock();
		return CKR_USER_NOT_LOGGED_IN;
	}
	/* Connections still logged in on the daemon's side are closed (idle ones) or logged
	 * out before their next request (busy ones). The ticket is forgotten: a child forked
	 * now does not inherit a login the application ended. */
	slot_logout_locked((size_t)idx);
	if ((k = kept_index_locked(shim.slots[idx].info.id)) >= 0) {
		explicit_bzero(&shim.kept[k], sizeof(shim.kept[k]));
		shim.kept[k] = shim.kept[--shim.nkept];
	}
	made = shim.slots[idx].made_objects;
	slot = shim.slots[idx].info.id;
	shim_unlock();
	/* A logout ends the private session objects, as on SoftHSM. */
	if (made)
		drop_objects(slot, P11MUX_DROP_PRIVATE);
	return CKR_OK;
}

/* --- session objects (docs/architecture.md, "Session objects") --- */

/* A CREATE, GENERATE or GENERATE_PAIR request, and the handles it got. */
struct make_call {
	uint32_t call;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	const CK_MECHANISM *mech;
	const CK_ATTRIBUTE *t[2];
	CK_ULONG n[2];
	CK_OBJECT_HANDLE made[2];
};

static void
put_make(struct p11mux_msg *m, void *arg)
{
	const struct make_call *mc = arg;

	p11mux_msg_put_ulong(m, mc->slot);
	p11mux_msg_put_ulong(m, mc->session);
	if (mc->call != P11MUX_CALL_CREATE)
		p11mux_msg_put_mech(m, mc->mech);
	p11mux_msg_put_attrs(m, mc->t[0], NULL, mc->n[0]);
	if (mc->call == P11MUX_CALL_GENERATE_PAIR)
		p11mux_msg_put_attrs(m, mc->t[1], NULL, mc->n[1]);
}

/* The objects made, each a handle and its attributes, which go into the object cache. */
static CK_RV
get_make(struct p11mux_msg *m, struct conn *c, void *arg)
{
	struct make_call *mc = arg;
	struct p11mux_attrs a;
	struct object *o[2] = {NULL, NULL};
	size_t i, n = mc->call == P11MUX_CALL_GENERATE_PAIR ? 2 : 1;
	CK_ULONG h;
	CK_RV rv = CKR_OK;

	(void)c;
	for (i = 0; i < n && rv == CKR_OK; i++) {
		if (p11mux_msg_get_ulong(m, &h) != 0 || p11mux_msg_get_attrs(m, &a) != 0 ||
		    !(h & P11MUX_SESSION_OBJECT))
			rv = CKR_DEVICE_ERROR;
		else if ((o[i] = object_make(mc->slot, a.attrs, a.status, a.n)) == NULL)
			rv = CKR_HOST_MEMORY;
		else {
			o[i]->session = mc->session;
			mc->made[i] = h;
		}
	}
	if (rv == CKR_OK && p11mux_msg_end(m) != 0)
		rv = CKR_DEVICE_ERROR;
	shim_lock();
	for (i = 0; i < n; i++) {
		if (rv == CKR_OK && shim.objects != NULL) {
			cache_forget_locked(mc->made[i]);
			if (p11mux_hmap_put(shim.objects, mc->made[i], o[i]) == 0)
				o[i] = NULL;
		}
		object_free(o[i]);
	}
	shim_unlock();
	return rv;
}

/* Whether a template's CK_ULONG attributes have a CK_ULONG's length (the wire carries them as
 * numbers); a device answers CKR_ATTRIBUTE_VALUE_INVALID to one that does not. */
static CK_RV
check_template(const CK_ATTRIBUTE *t, CK_ULONG n)
{
	CK_ULONG i;

	if (t == NULL && n > 0)
		return CKR_ARGUMENTS_BAD;
	for (i = 0; i < n; i++)
		if (t[i].pValue != NULL && p11mux_attr_is_ulong(t[i].type) &&
		    t[i].ulValueLen != sizeof(CK_ULONG))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	return CKR_OK;
}

/* Makes session objects through the daemon: on one member, pinned there, owned by this
 * process and session. mech (GENERATE*) is checked against the slot's list for flag. */
static CK_RV
make_objects(CK_SESSION_HANDLE h, struct make_call *mc, CK_FLAGS flag)
{
	struct session *s;
	int idx, m;
	CK_RV rv = CKR_OK;

	if ((rv = check_template(mc->t[0], mc->n[0])) != CKR_OK ||
	    (rv = check_template(mc->t[1], mc->n[1])) != CKR_OK)
		return rv;
	if (mc->call != P11MUX_CALL_CREATE && mc->mech == NULL)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((idx = session_slot_locked(h, &s)) < 0) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (mc->call != P11MUX_CALL_CREATE &&
	           ((m = mech_index_locked(idx, mc->mech->mechanism)) < 0 ||
	            !(shim.slots[idx].info.infos[m].flags & flag))) {
		rv = CKR_MECHANISM_INVALID;
	} else {
		mc->slot = s->slot;
		mc->session = h;
	}
	shim_unlock();
	if (rv != CKR_OK)
		return rv;
	if (mc->call != P11MUX_CALL_CREATE && (rv = p11mux_mech_param_ok(mc->mech)) != CKR_OK)
		return rv;
	/* Marked before the call: a C_CloseSession meanwhile then drops what it makes. */
	shim_lock();
	if ((s = session_get_locked(h)) != NULL)
		s->made_objects = 1;
	shim.slots[idx].made_objects = 1;
	shim_unlock();
	return shim_call(mc->call, put_make, get_make, mc);
}

static CK_RV
mux_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                 CK_OBJECT_HANDLE_PTR phObject)
{
	struct make_call mc = {.call = P11MUX_CALL_CREATE, .t = {pTemplate}, .n = {ulCount}};
	CK_RV rv;

	ENTER();
	if (phObject == NULL)
		return CKR_ARGUMENTS_BAD;
	if (wants_token(pTemplate, ulCount))
		return refuse_write(h, "C_CreateObject", 1);
	if ((rv = make_objects(h, &mc, 0)) == CKR_OK)
		*phObject = mc.made[0];
	return rv;
}

struct drop_call {
	CK_SLOT_ID slot;
	CK_ULONG what; /* a session, or 0: all; or the object for DESTROY */
};

static void
put_drop(struct p11mux_msg *m, void *arg)
{
	const struct drop_call *dc = arg;

	p11mux_msg_put_ulong(m, dc->slot);
	p11mux_msg_put_ulong(m, dc->what);
}

/* Tells the daemon that the session objects of session (0: of every session) of slot end. */
static void
drop_objects(CK_SLOT_ID slot, CK_SESSION_HANDLE session)
{
	struct drop_call dc = {slot, session};
	CK_RV rv;

	shim_lock();
	cache_forget_session_locked(slot, session);
	shim_unlock();
	rv = shim_call(P11MUX_CALL_DROP, put_drop, NULL, &dc);

	/* Not reached, they end anyway: the daemon destroys an application's objects when its
	 * connections have been closed for a while. */
	if (rv != CKR_OK)
		shim_debug("session objects of slot %lu, session %lu not dropped: %s", slot,
		           session, p11mux_rv_name(rv));
}

static CK_RV
mux_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
               CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject)
{
	CK_RV rv;

	(void)hObject;
	if (phNewObject == NULL || (pTemplate == NULL && ulCount > 0))
		return CKR_ARGUMENTS_BAD;
	if (wants_token(pTemplate, ulCount))
		return refuse_write(h, "C_CopyObject", 1);
	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	/* NSS's TLS server copies its key to a session object first; told that copying is not
	 * supported, it uses the token key itself, which is what a pool wants. */
	shim_debug("C_CopyObject: not supported (callers fall back to the token object)");
	return CKR_FUNCTION_NOT_SUPPORTED;
}

/* A change to an object: an unknown handle is CKR_OBJECT_HANDLE_INVALID before the pool
 * refuses to change its objects. */
static CK_RV
refuse_change(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, const char *func)
{
	struct object *obj = NULL;
	CK_SLOT_ID slot;
	CK_RV rv;

	ENTER();
	if ((rv = session_slot(h, &slot)) != CKR_OK)
		return rv;
	if ((rv = cache_get_object(slot, o, &obj)) != CKR_OK)
		return rv;
	object_free(obj);
	return refuse_write(h, func, 1);
}

static CK_RV
mux_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hObject)
{
	struct drop_call dc = {0, hObject};
	CK_RV rv;

	ENTER();
	if (!(hObject & P11MUX_SESSION_OBJECT))
		return refuse_change(h, hObject, "C_DestroyObject");
	if ((rv = session_slot(h, &dc.slot)) != CKR_OK)
		return rv;
	rv = shim_call(P11MUX_CALL_DESTROY, put_drop, NULL, &dc);
	if (rv == CKR_OK || rv == CKR_OBJECT_HANDLE_INVALID) {
		shim_lock();
		cache_forget_locked(hObject);
		shim_unlock();
	}
	return rv;
}

static CK_RV
mux_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize)
{
	struct object *o = NULL;
	CK_SLOT_ID slot;
	CK_ULONG size = 0;
	size_t i;
	CK_RV rv;

	ENTER();
	if (pulSize == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_slot(h, &slot)) != CKR_OK)
		return rv;
	if ((rv = cache_get_object(slot, hObject, &o)) != CKR_OK)
		return rv;
	for (i = 0; i < o->n; i++)
		size += o->attrs[i].ulValueLen;
	object_free(o);
	*pulSize = size;
	return CKR_OK;
}

struct template
{
	CK_ATTRIBUTE_PTR t;
	CK_ULONG n;
};

/* Fills a template from a cached object, as PKCS#11 says: every attribute is processed and
 * the last problem found is returned. */
static CK_RV
fill_template(const struct object *o, void *arg)
{
	const struct template *tp = arg;
	CK_RV ret = CKR_OK;
	CK_ULONG i;
	int k;

	for (i = 0; i < tp->n; i++) {
		CK_ATTRIBUTE *t = &tp->t[i];

		if ((k = object_find(o, t->type)) < 0) {
			t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
			ret = CKR_ATTRIBUTE_TYPE_INVALID;
		} else if (o->status[k] != CKR_OK) {
			t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
			ret = o->status[k];
		} else if (t->pValue == NULL) {
			t->ulValueLen = o->attrs[k].ulValueLen;
		} else if (t->ulValueLen < o->attrs[k].ulValueLen) {
			t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
			ret = CKR_BUFFER_TOO_SMALL;
		} else {
			if (o->attrs[k].ulValueLen > 0)
				memcpy(t->pValue, o->attrs[k].pValue, o->attrs[k].ulValueLen);
			t->ulValueLen = o->attrs[k].ulValueLen;
		}
	}
	return ret;
}

static CK_RV
mux_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                      CK_ULONG ulCount)
{
	struct template tp = {pTemplate, ulCount};
	CK_RV rv;
	CK_SLOT_ID slot;

	ENTER();
	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_slot(h, &slot)) != CKR_OK)
		return rv;
	return cache_with_object(slot, hObject, fill_template, &tp);
}

static CK_RV
mux_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                      CK_ULONG ulCount)
{
	struct object *o = NULL;
	CK_SLOT_ID slot;
	CK_RV rv;

	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	if (!(hObject & P11MUX_SESSION_OBJECT))
		return refuse_change(h, hObject, "C_SetAttributeValue");
	/* A session object's attributes are what its member made: not changed (yet). */
	ENTER();
	if ((rv = session_slot(h, &slot)) != CKR_OK ||
	    (rv = cache_get_object(slot, hObject, &o)) != CKR_OK)
		return rv;
	object_free(o);
	return CKR_ATTRIBUTE_READ_ONLY;
}

/* A FIND request and the handles it found. */
struct find_call {
	CK_SLOT_ID slot;
	const CK_ATTRIBUTE *tmpl;
	CK_ULONG n;
	CK_OBJECT_HANDLE *found;
	size_t nfound;
	CK_ULONG version; /* the pool's view */
};

static void
put_find(struct p11mux_msg *m, void *arg)
{
	const struct find_call *fc = arg;

	p11mux_msg_put_ulong(m, fc->slot);
	p11mux_msg_put_attrs(m, fc->tmpl, NULL, fc->n);
}

static CK_RV
get_find(struct p11mux_msg *m, struct conn *c, void *arg)
{
	struct find_call *fc = arg;
	CK_ULONG *handles;
	size_t n;

	(void)c;
	if (p11mux_msg_get_ulongs(m, &handles, &n) != 0 ||
	    p11mux_msg_get_ulong(m, &fc->version) != 0 || p11mux_msg_end(m) != 0)
		return CKR_DEVICE_ERROR;
	if ((fc->found = calloc(n ? n : 1, sizeof(*fc->found))) == NULL)
		return CKR_HOST_MEMORY;
	memcpy(fc->found, handles, n * sizeof(*fc->found));
	fc->nfound = n;
	return CKR_OK;
}

static CK_RV
mux_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct find_call fc = {0, pTemplate, ulCount, NULL, 0, 0};
	struct session *s;
	CK_RV rv;
	int idx;

	ENTER();
	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((s = session_get_locked(h)) == NULL) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	rv = s->finding ? CKR_OPERATION_ACTIVE : CKR_OK;
	fc.slot = s->slot;
	shim_unlock();
	if (rv != CKR_OK)
		return rv;
	if ((rv = shim_call(P11MUX_CALL_FIND_VERSIONED, put_find, get_find, &fc)) != CKR_OK) {
		free(fc.found);
		return rv;
	}
	shim_lock();
	/* Keys came or went (a rescan): the cached token objects of the slot may be stale. */
	if ((idx = cache_slot_index_locked(fc.slot)) >= 0 &&
	    (!shim.slots[idx].have_view_version || shim.slots[idx].view_version != fc.version)) {
		if (shim.slots[idx].have_view_version)
			cache_forget_token_objects_locked(fc.slot);
		shim.slots[idx].view_version = fc.version;
		shim.slots[idx].have_view_version = 1;
	}
	if ((s = session_get_locked(h)) == NULL) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (s->finding) {
		rv = CKR_OPERATION_ACTIVE;
	} else {
		s->finding = 1;
		s->found = fc.found;
		s->nfound = fc.nfound;
		s->foundpos = 0;
		fc.found = NULL;
	}
	shim_unlock();
	free(fc.found);
	return rv;
}

static CK_RV
mux_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMax,
                CK_ULONG_PTR pulCount)
{
	struct session *s;
	CK_ULONG n = 0;
	CK_RV rv = CKR_OK;

	ENTER();
	if ((phObject == NULL && ulMax > 0) || pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((s = session_get_locked(h)) == NULL)
		rv = CKR_SESSION_HANDLE_INVALID;
	else if (!s->finding)
		rv = CKR_OPERATION_NOT_INITIALIZED;
	else
		while (n < ulMax && s->foundpos < s->nfound)
			phObject[n++] = s->found[s->foundpos++];
	shim_unlock();
	if (rv == CKR_OK)
		*pulCount = n;
	return rv;
}

static CK_RV
mux_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	struct session *s;
	CK_RV rv = CKR_OK;

	ENTER();
	shim_lock();
	if ((s = session_get_locked(h)) == NULL) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (!s->finding) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
	} else {
		free(s->found);
		s->found = NULL;
		s->nfound = s->foundpos = 0;
		s->finding = 0;
	}
	shim_unlock();
	return rv;
}

/* --- cryptographic operations --- */

static const CK_FLAGS op_flag[OP_COUNT] = {
        [OP_SIGN] = CKF_SIGN,       [OP_VERIFY] = CKF_VERIFY, [OP_ENCRYPT] = CKF_ENCRYPT,
        [OP_DECRYPT] = CKF_DECRYPT, [OP_DIGEST] = CKF_DIGEST,
};
static const CK_ATTRIBUTE_TYPE op_attr[OP_COUNT] = {
        [OP_SIGN] = CKA_SIGN,       [OP_VERIFY] = CKA_VERIFY, [OP_ENCRYPT] = CKA_ENCRYPT,
        [OP_DECRYPT] = CKA_DECRYPT, [OP_DIGEST] = 0,
};
static const uint32_t op_call[OP_COUNT] = {
        [OP_SIGN] = P11MUX_CALL_SIGN,       [OP_VERIFY] = P11MUX_CALL_VERIFY,
        [OP_ENCRYPT] = P11MUX_CALL_ENCRYPT, [OP_DECRYPT] = P11MUX_CALL_DECRYPT,
        [OP_DIGEST] = P11MUX_CALL_DIGEST,
};

/* Checks the key against what the operation needs, from the cached object: a key at all
 * (CKR_KEY_TYPE_INCONSISTENT), the other half of a key pair (CKR_KEY_FUNCTION_NOT_PERMITTED,
 * as SoftHSM answers a signature with a public key), a key type of the mechanism's family
 * (CKR_KEY_TYPE_INCONSISTENT at C_*Init, as OpenSC answers; SoftHSM accepts the key and
 * fails at C_Sign), the usage attribute, and the login. */
static CK_RV
check_key(enum op_kind kind, CK_MECHANISM_TYPE mech, const struct object *o, int logged_in)
{
	CK_OBJECT_CLASS cls = object_ulong(o, CKA_CLASS, (CK_ULONG)-1);
	int private_side = kind == OP_SIGN || kind == OP_DECRYPT;

	if (cls != CKO_SECRET_KEY && cls != CKO_PRIVATE_KEY && cls != CKO_PUBLIC_KEY)
		return CKR_KEY_TYPE_INCONSISTENT;
	if (cls != CKO_SECRET_KEY && cls != (private_side ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY))
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	if (!p11mux_mech_key_ok(mech, object_ulong(o, CKA_KEY_TYPE, (CK_ULONG)-1)))
		return CKR_KEY_TYPE_INCONSISTENT;
	if (!object_bool(o, op_attr[kind], 1))
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	if (object_bool(o, CKA_PRIVATE, cls != CKO_PUBLIC_KEY) && !logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

struct key_check {
	enum op_kind kind;
	CK_MECHANISM_TYPE mech;
	int logged_in;
};

static CK_RV
check_key_cb(const struct object *o, void *arg)
{
	const struct key_check *kc = arg;

	return check_key(kc->kind, kc->mech, o, kc->logged_in);
}

static CK_RV
op_init(CK_SESSION_HANDLE h, enum op_kind kind, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	struct session *s;
	CK_SLOT_ID slot;
	int idx, m, logged_in;
	CK_RV rv = CKR_OK;

	ENTER();
	if (mech == NULL)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((idx = session_slot_locked(h, &s)) < 0) {
		shim_unlock();
		return CKR_SESSION_HANDLE_INVALID;
	}
	if (s->ops[kind].active)
		rv = CKR_OPERATION_ACTIVE;
	else if ((m = mech_index_locked(idx, mech->mechanism)) < 0 ||
	         !(shim.slots[idx].info.infos[m].flags & op_flag[kind]))
		rv = CKR_MECHANISM_INVALID;
	slot = s->slot;
	logged_in = shim.slots[idx].logged_in;
	shim_unlock();
	if (rv != CKR_OK)
		return rv;
	if ((rv = p11mux_mech_param_ok(mech)) != CKR_OK)
		return rv;
	if (kind != OP_DIGEST) {
		struct key_check kc = {kind, mech->mechanism, logged_in};

		rv = cache_with_object(slot, key, check_key_cb, &kc);
		if (rv == CKR_OBJECT_HANDLE_INVALID)
			return CKR_KEY_HANDLE_INVALID;
		if (rv != CKR_OK)
			return rv;
	}
	shim_lock();
	if ((s = session_get_locked(h)) == NULL) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (s->ops[kind].active) {
		rv = CKR_OPERATION_ACTIVE;
	} else if ((rv = op_set_mech(&s->ops[kind], mech)) == CKR_OK) {
		s->ops[kind].key = key;
		s->ops[kind].active = 1;
	} else {
		op_reset(&s->ops[kind]);
	}
	shim_unlock();
	return rv;
}

/* Hands a result to the caller as PKCS#11 wants: a NULL buffer or one too small keeps the
 * operation (and the result, so the next call costs no round trip). Lock held. */
static CK_RV
deliver_locked(struct op *op, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	if (out == NULL) {
		*outlen = op->rlen;
		return CKR_OK;
	}
	if (*outlen < op->rlen) {
		*outlen = op->rlen;
		return CKR_BUFFER_TOO_SMALL;
	}
	if (op->rlen > 0)
		memcpy(out, op->result, op->rlen);
	*outlen = op->rlen;
	op_reset(op);
	return CKR_OK;
}

/* An operation's request: a private copy of what the session's pending operation holds
 * (another thread may close the session while the daemon works), and the result. */
struct op_call {
	enum op_kind kind;
	CK_SLOT_ID slot;
	struct op copy; /* mechanism, key and gathered data */
	const void *data, *extra;
	size_t len, extralen;
	uint8_t *result;
	size_t rlen;
};

static void
put_op(struct p11mux_msg *m, void *arg)
{
	const struct op_call *oc = arg;

	p11mux_msg_put_ulong(m, oc->slot);
	p11mux_msg_put_mech(m, &oc->copy.mech);
	if (oc->kind != OP_DIGEST)
		p11mux_msg_put_ulong(m, oc->copy.key);
	p11mux_msg_put_bytes(m, oc->data, oc->len);
	if (oc->kind == OP_VERIFY)
		p11mux_msg_put_bytes(m, oc->extra, oc->extralen);
}

static CK_RV
get_op(struct p11mux_msg *m, struct conn *c, void *arg)
{
	struct op_call *oc = arg;
	const uint8_t *res = NULL;
	size_t len = 0;

	(void)c;
	if (oc->kind != OP_VERIFY)
		p11mux_msg_get_bytes(m, &res, &len);
	if (p11mux_msg_end(m) != 0)
		return CKR_DEVICE_ERROR;
	if (oc->kind == OP_VERIFY)
		return CKR_OK;
	if ((oc->result = malloc(len ? len : 1)) == NULL)
		return CKR_HOST_MEMORY;
	memcpy(oc->result, res, len);
	oc->rlen = len;
	return CKR_OK;
}

/* Whether an encryption or decryption mechanism has no multi-part form: C_EncryptUpdate,
 * C_EncryptFinal and their decryption twins answer CKR_FUNCTION_NOT_SUPPORTED and leave the
 * operation for C_Encrypt, as SoftHSM does. (Signing and verifying with such a mechanism
 * gather the parts, as OpenSC does: docs/conformance.md.) */
static int
crypt_single_part(enum op_kind kind, const CK_MECHANISM *mech)
{
	return (kind == OP_ENCRYPT || kind == OP_DECRYPT) &&
	       p11mux_mech_single_part(mech->mechanism);
}

/* Takes what the request needs from the session's pending operation into oc. CKR_OK, or the
 * answer to give at once (a result kept from a size query, or an error). Lock held. */
static CK_RV
op_take_locked(CK_SESSION_HANDLE h, struct op_call *oc, int accumulated, CK_BYTE_PTR out,
               CK_ULONG_PTR outlen, int *answered)
{
	struct session *s;
	struct op *op;

	*answered = 1;
	if ((s = session_get_locked(h)) == NULL)
		return CKR_SESSION_HANDLE_INVALID;
	op = &s->ops[oc->kind];
	if (!op->active)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (op->have_result)
		return deliver_locked(op, out, outlen);
	if (accumulated && crypt_single_part(oc->kind, &op->mech))
		return CKR_FUNCTION_NOT_SUPPORTED;
	if (!accumulated && op->multipart) {
		/* C_Sign after C_SignUpdate is not allowed. */
		op_reset(op);
		return CKR_OPERATION_ACTIVE;
	}
	*answered = 0;
	oc->copy.key = op->key;
	oc->slot = s->slot;
	if (op_set_mech(&oc->copy, &op->mech) != CKR_OK ||
	    (accumulated && op->len > 0 && op_append(&oc->copy, op->data, op->len) != CKR_OK)) {
		op_reset(op);
		return CKR_HOST_MEMORY;
	}
	return CKR_OK;
}

/* Ends the session's operation with the call's outcome, or keeps its result for the
 * caller's buffer as deliver_locked() says. Lock held. */
static CK_RV
op_finish_locked(CK_SESSION_HANDLE h, struct op_call *oc, CK_RV rv, CK_BYTE_PTR out,
                 CK_ULONG_PTR outlen)
{
	struct session *s;
	struct op *op;

	if ((s = session_get_locked(h)) == NULL)
		return CKR_SESSION_HANDLE_INVALID;
	op = &s->ops[oc->kind];
	if (rv != CKR_OK || oc->kind == OP_VERIFY) {
		op_reset(op);
		return rv;
	}
	op->result = oc->result;
	op->rlen = oc->rlen;
	op->have_result = 1;
	oc->result = NULL;
	return deliver_locked(op, out, outlen);
}

/* Runs a pending operation on data (or on the gathered multi-part data when data is NULL
 * and accumulated is set). For VERIFY, extra is the signature. */
static CK_RV
op_run(CK_SESSION_HANDLE h, enum op_kind kind, const void *data, size_t len, int accumulated,
       const void *extra, size_t extralen, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct op_call oc = {
	        .kind = kind, .data = data, .len = len, .extra = extra, .extralen = extralen};
	int answered;
	CK_RV rv;

	ENTER();
	if (kind != OP_VERIFY && outlen == NULL)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	rv = op_take_locked(h, &oc, accumulated, out, outlen, &answered);
	shim_unlock();
	if (answered || rv != CKR_OK) {
		op_reset(&oc.copy);
		return rv;
	}
	if (accumulated) {
		oc.data = oc.copy.data;
		oc.len = oc.copy.len;
	}
	rv = oc.len > P11MUX_DATA_MAX ? CKR_DATA_LEN_RANGE
	                              : shim_call(op_call[kind], put_op, get_op, &oc);
	/* A session key whose member failed is gone, as on a pulled device; a token key that
	 * a rescan withdrew is gone too (the next search would have said so). */
	if (rv == CKR_KEY_HANDLE_INVALID ||
	    ((oc.copy.key & P11MUX_SESSION_OBJECT) && rv == CKR_DEVICE_REMOVED)) {
		shim_lock();
		cache_forget_locked(oc.copy.key);
		shim_unlock();
	}
	shim_lock();
	rv = op_finish_locked(h, &oc, rv, out, outlen);
	shim_unlock();
	op_reset(&oc.copy);
	p11mux_free_secret(oc.result, oc.rlen);
	return rv;
}

static CK_RV
op_update(CK_SESSION_HANDLE h, enum op_kind kind, const void *data, CK_ULONG len)
{
	struct session *s;
	CK_RV rv;

	ENTER();
	if (data == NULL && len > 0)
		return CKR_ARGUMENTS_BAD;
	shim_lock();
	if ((s = session_get_locked(h)) == NULL) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (!s->ops[kind].active) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
	} else if (crypt_single_part(kind, &s->ops[kind].mech)) {
		rv = CKR_FUNCTION_NOT_SUPPORTED;
	} else if ((rv = op_append(&s->ops[kind], data, len)) != CKR_OK) {
		op_reset(&s->ops[kind]);
	}
	shim_unlock();
	return rv;
}

static CK_RV
mux_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	return op_init(h, OP_ENCRYPT, pMechanism, hKey);
}

static CK_RV
mux_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pOut,
            CK_ULONG_PTR pulOutLen)
{
	if (pData == NULL && ulDataLen > 0)
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_ENCRYPT, pData, ulDataLen, 0, NULL, 0, pOut, pulOutLen);
}

/* Multi-part encryption and decryption gather their input and produce all output at
 * Final; Update outputs nothing, which PKCS#11 allows for buffering mechanisms. */
static CK_RV
mux_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pOut,
                  CK_ULONG_PTR pulOutLen)
{
	CK_RV rv;

	(void)pOut;
	if (pulOutLen == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = op_update(h, OP_ENCRYPT, pPart, ulPartLen)) == CKR_OK)
		*pulOutLen = 0;
	return rv;
}

static CK_RV
mux_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR pOut, CK_ULONG_PTR pulOutLen)
{
	return op_run(h, OP_ENCRYPT, NULL, 0, 1, NULL, 0, pOut, pulOutLen);
}

static CK_RV
mux_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	return op_init(h, OP_DECRYPT, pMechanism, hKey);
}

static CK_RV
mux_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pOut,
            CK_ULONG_PTR pulOutLen)
{
	if (pData == NULL && ulDataLen > 0)
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_DECRYPT, pData, ulDataLen, 0, NULL, 0, pOut, pulOutLen);
}

static CK_RV
mux_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pOut,
                  CK_ULONG_PTR pulOutLen)
{
	CK_RV rv;

	(void)pOut;
	if (pulOutLen == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = op_update(h, OP_DECRYPT, pPart, ulPartLen)) == CKR_OK)
		*pulOutLen = 0;
	return rv;
}

static CK_RV
mux_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR pOut, CK_ULONG_PTR pulOutLen)
{
	return op_run(h, OP_DECRYPT, NULL, 0, 1, NULL, 0, pOut, pulOutLen);
}

static CK_RV
mux_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism)
{
	return op_init(h, OP_DIGEST, pMechanism, 0);
}

static CK_RV
mux_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
           CK_ULONG_PTR pulDigestLen)
{
	if (pData == NULL && ulDataLen > 0)
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_DIGEST, pData, ulDataLen, 0, NULL, 0, pDigest, pulDigestLen);
}

static CK_RV
mux_DigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	return op_update(h, OP_DIGEST, pPart, ulPartLen);
}

static CK_RV
mux_DigestKey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE hKey)
{
	CK_RV rv;

	(void)hKey;
	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV
mux_DigestFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen)
{
	return op_run(h, OP_DIGEST, NULL, 0, 1, NULL, 0, pDigest, pulDigestLen);
}

static CK_RV
mux_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	return op_init(h, OP_SIGN, pMechanism, hKey);
}

static CK_RV
mux_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
         CK_ULONG_PTR pulSignatureLen)
{
	if (pData == NULL && ulDataLen > 0)
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_SIGN, pData, ulDataLen, 0, NULL, 0, pSignature, pulSignatureLen);
}

static CK_RV
mux_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	return op_update(h, OP_SIGN, pPart, ulPartLen);
}

static CK_RV
mux_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	return op_run(h, OP_SIGN, NULL, 0, 1, NULL, 0, pSignature, pulSignatureLen);
}

static CK_RV
not_supported_op(CK_SESSION_HANDLE h)
{
	CK_RV rv;

	ENTER();
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV
mux_SignRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	(void)pMechanism;
	(void)hKey;
	return not_supported_op(h);
}

static CK_RV
mux_SignRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                CK_ULONG_PTR pulSignatureLen)
{
	(void)pData;
	(void)ulDataLen;
	(void)pSignature;
	(void)pulSignatureLen;
	return not_supported_op(h);
}

static CK_RV
mux_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	return op_init(h, OP_VERIFY, pMechanism, hKey);
}

static CK_RV
mux_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
           CK_ULONG ulSignatureLen)
{
	if ((pData == NULL && ulDataLen > 0) || (pSignature == NULL && ulSignatureLen > 0))
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_VERIFY, pData, ulDataLen, 0, pSignature, ulSignatureLen, NULL, NULL);
}

static CK_RV
mux_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	return op_update(h, OP_VERIFY, pPart, ulPartLen);
}

static CK_RV
mux_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
	if (pSignature == NULL && ulSignatureLen > 0)
		return CKR_ARGUMENTS_BAD;
	return op_run(h, OP_VERIFY, NULL, 0, 1, pSignature, ulSignatureLen, NULL, NULL);
}

static CK_RV
mux_VerifyRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	(void)pMechanism;
	(void)hKey;
	return not_supported_op(h);
}

static CK_RV
mux_VerifyRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen,
                  CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen)
{
	(void)pSignature;
	(void)ulSignatureLen;
	(void)pData;
	(void)pulDataLen;
	return not_supported_op(h);
}

static CK_RV
mux_DigestEncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                        CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen)
{
	(void)pPart;
	(void)ulPartLen;
	(void)pEncryptedPart;
	(void)pulEncryptedPartLen;
	return not_supported_op(h);
}

static CK_RV
mux_DecryptDigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pEncryptedPart,
                        CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen)
{
	(void)pEncryptedPart;
	(void)ulEncryptedPartLen;
	(void)pPart;
	(void)pulPartLen;
	return not_supported_op(h);
}

static CK_RV
mux_SignEncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                      CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen)
{
	(void)pPart;
	(void)ulPartLen;
	(void)pEncryptedPart;
	(void)pulEncryptedPartLen;
	return not_supported_op(h);
}

static CK_RV
mux_DecryptVerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR pEncryptedPart,
                        CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen)
{
	(void)pEncryptedPart;
	(void)ulEncryptedPartLen;
	(void)pPart;
	(void)pulPartLen;
	return not_supported_op(h);
}

static CK_RV
mux_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,
                CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey)
{
	struct make_call mc = {
	        .call = P11MUX_CALL_GENERATE, .mech = pMechanism, .t = {pTemplate}, .n = {ulCount}};
	CK_RV rv;

	ENTER();
	if (phKey == NULL)
		return CKR_ARGUMENTS_BAD;
	if (wants_token(pTemplate, ulCount))
		return refuse_write(h, "C_GenerateKey", 1);
	if ((rv = make_objects(h, &mc, CKF_GENERATE)) == CKR_OK)
		*phKey = mc.made[0];
	return rv;
}

static CK_RV
mux_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pPubTemplate,
                    CK_ULONG ulPubCount, CK_ATTRIBUTE_PTR pPrivTemplate, CK_ULONG ulPrivCount,
                    CK_OBJECT_HANDLE_PTR phPub, CK_OBJECT_HANDLE_PTR phPriv)
{
	struct make_call mc = {.call = P11MUX_CALL_GENERATE_PAIR,
	                       .mech = pMechanism,
	                       .t = {pPubTemplate, pPrivTemplate},
	                       .n = {ulPubCount, ulPrivCount}};
	CK_RV rv;

	ENTER();
	if (phPub == NULL || phPriv == NULL)
		return CKR_ARGUMENTS_BAD;
	if (wants_token(pPubTemplate, ulPubCount) || wants_token(pPrivTemplate, ulPrivCount))
		return refuse_write(h, "C_GenerateKeyPair", 1);
	if ((rv = make_objects(h, &mc, CKF_GENERATE_KEY_PAIR)) == CKR_OK) {
		*phPub = mc.made[0];
		*phPriv = mc.made[1];
	}
	return rv;
}

static CK_RV
mux_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey,
            CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen)
{
	(void)pMechanism;
	(void)hWrappingKey;
	(void)hKey;
	(void)pWrappedKey;
	(void)pulWrappedKeyLen;
	return not_supported_op(h);
}

static CK_RV
mux_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hUnwrappingKey,
              CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
              CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
	(void)pMechanism;
	(void)hUnwrappingKey;
	(void)pWrappedKey;
	(void)ulWrappedKeyLen;
	(void)phKey;
	if (wants_token(pTemplate, ulAttributeCount))
		return refuse_write(h, "C_UnwrapKey", 1);
	return not_supported_op(h); /* session keys from wrapped ones: not yet */
}

static CK_RV
mux_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey,
              CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
	(void)pMechanism;
	(void)hBaseKey;
	(void)phKey;
	if (wants_token(pTemplate, ulAttributeCount))
		return refuse_write(h, "C_DeriveKey", 1);
	return not_supported_op(h); /* derived session keys: not yet */
}

static CK_RV
mux_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen)
{
	CK_RV rv;

	ENTER();
	if (pSeed == NULL && ulSeedLen > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = check_session(h)) != CKR_OK)
		return rv;
	/* The devices' generators are not seeded by applications (OpenSC offers no seeding). */
	return CKR_RANDOM_SEED_NOT_SUPPORTED;
}

/* One RANDOM request: up to 65536 bytes, straight into the caller's buffer. */
struct random_call {
	CK_SLOT_ID slot;
	CK_BYTE_PTR out;
	size_t want;
};

static void
put_random(struct p11mux_msg *m, void *arg)
{
	const struct random_call *rc = arg;

	p11mux_msg_put_ulong(m, rc->slot);
	p11mux_msg_put_ulong(m, rc->want);
}

static CK_RV
get_random(struct p11mux_msg *m, struct conn *c, void *arg)
{
	const struct random_call *rc = arg;
	const uint8_t *p;
	size_t got;

	(void)c;
	if (p11mux_msg_get_bytes(m, &p, &got) != 0 || p11mux_msg_end(m) != 0 || got != rc->want)
		return CKR_DEVICE_ERROR;
	memcpy(rc->out, p, got);
	return CKR_OK;
}

static CK_RV
mux_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR pRandom, CK_ULONG ulRandomLen)
{
	struct random_call rc = {0, pRandom, 0};
	CK_RV rv;

	ENTER();
	if (pRandom == NULL && ulRandomLen > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_slot(h, &rc.slot)) != CKR_OK)
		return rv;
	while (ulRandomLen > 0 && rv == CKR_OK) {
		rc.want = ulRandomLen > 65536 ? 65536 : ulRandomLen;
		if ((rv = shim_call(P11MUX_CALL_RANDOM, put_random, get_random, &rc)) == CKR_OK) {
			rc.out += rc.want;
			ulRandomLen -= rc.want;
		}
	}
	return rv;
}

static CK_RV
mux_GetFunctionStatus(CK_SESSION_HANDLE h)
{
	(void)h;
	ENTER();
	return CKR_FUNCTION_NOT_PARALLEL;
}

static CK_RV
mux_CancelFunction(CK_SESSION_HANDLE h)
{
	(void)h;
	ENTER();
	return CKR_FUNCTION_NOT_PARALLEL;
}

static CK_RV
mux_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved)
{
	(void)pSlot;
	ENTER();
	if (pReserved != NULL)
		return CKR_ARGUMENTS_BAD;
	/* The pool's slots never change: no event now, and none to wait for (a blocking call
	 * is not supported, as on SoftHSM). */
	return (flags & CKF_DONT_BLOCK) ? CKR_NO_EVENT : CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV mux_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);

static CK_FUNCTION_LIST function_list = {
        {2, 40},
        mux_Initialize,
        mux_Finalize,
        mux_GetInfo,
        mux_GetFunctionList,
        mux_GetSlotList,
        mux_GetSlotInfo,
        mux_GetTokenInfo,
        mux_GetMechanismList,
        mux_GetMechanismInfo,
        mux_InitToken,
        mux_InitPIN,
        mux_SetPIN,
        mux_OpenSession,
        mux_CloseSession,
        mux_CloseAllSessions,
        mux_GetSessionInfo,
        mux_GetOperationState,
        mux_SetOperationState,
        mux_Login,
        mux_Logout,
        mux_CreateObject,
        mux_CopyObject,
        mux_DestroyObject,
        mux_GetObjectSize,
        mux_GetAttributeValue,
        mux_SetAttributeValue,
        mux_FindObjectsInit,
        mux_FindObjects,
        mux_FindObjectsFinal,
        mux_EncryptInit,
        mux_Encrypt,
        mux_EncryptUpdate,
        mux_EncryptFinal,
        mux_DecryptInit,
        mux_Decrypt,
        mux_DecryptUpdate,
        mux_DecryptFinal,
        mux_DigestInit,
        mux_Digest,
        mux_DigestUpdate,
        mux_DigestKey,
        mux_DigestFinal,
        mux_SignInit,
        mux_Sign,
        mux_SignUpdate,
        mux_SignFinal,
        mux_SignRecoverInit,
        mux_SignRecover,
        mux_VerifyInit,
        mux_Verify,
        mux_VerifyUpdate,
        mux_VerifyFinal,
        mux_VerifyRecoverInit,
        mux_VerifyRecover,
        mux_DigestEncryptUpdate,
        mux_DecryptDigestUpdate,
        mux_SignEncryptUpdate,
        mux_DecryptVerifyUpdate,
        mux_GenerateKey,
        mux_GenerateKeyPair,
        mux_WrapKey,
        mux_UnwrapKey,
        mux_DeriveKey,
        mux_SeedRandom,
        mux_GenerateRandom,
        mux_GetFunctionStatus,
        mux_CancelFunction,
        mux_WaitForSlotEvent,
};

static CK_RV
mux_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &function_list;
	return CKR_OK;
}

EXPORT CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	return mux_GetFunctionList(ppFunctionList);
}

/*
 * PKCS#11 3.0 interface discovery. p11-kit's 2.40 header lacks these types, so the 3.0
 * layout is declared here. The one interface is "PKCS 11" with the 2.40 function list and
 * no flags: in particular not CKF_INTERFACE_FORK_SAFE, because a forked child must call
 * C_Initialize again (it gets CKR_CRYPTOKI_NOT_INITIALIZED until it does).
 */
typedef struct {
	CK_CHAR *pInterfaceName;
	CK_VOID_PTR pFunctionList;
	CK_FLAGS flags;
} mux_interface_t;

static mux_interface_t interfaces[] = {
        {(CK_CHAR *)"PKCS 11", &function_list, 0},
};

EXPORT CK_RV
C_GetInterfaceList(mux_interface_t *pInterfacesList, CK_ULONG_PTR pulCount)
{
	CK_ULONG n = sizeof(interfaces) / sizeof(interfaces[0]);

	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	if (pInterfacesList == NULL) {
		*pulCount = n;
		return CKR_OK;
	}
	if (*pulCount < n) {
		*pulCount = n;
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(pInterfacesList, interfaces, sizeof(interfaces));
	*pulCount = n;
	return CKR_OK;
}

EXPORT CK_RV
C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
               mux_interface_t **ppInterface, CK_FLAGS flags)
{
	if (ppInterface == NULL)
		return CKR_ARGUMENTS_BAD;
	if (pInterfaceName != NULL && strcmp((const char *)pInterfaceName, "PKCS 11") != 0)
		return CKR_ARGUMENTS_BAD;
	if (pVersion != NULL && (pVersion->major != 2 || pVersion->minor != 40))
		return CKR_ARGUMENTS_BAD;
	if ((flags & interfaces[0].flags) != flags)
		return CKR_ARGUMENTS_BAD;
	*ppInterface = &interfaces[0];
	return CKR_OK;
}
