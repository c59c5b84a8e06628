/*
 * p11sim-pkcs11.so: the PKCS#11 entry points. Every function of the wrapped module is
 * forwarded; on the way each call waits for its token's device, takes the device's time, and
 * meets the faults the control directory sets (device.c). Starts no threads.
 *
 * Which calls use the device: everything that names a token or a session, except the
 * driver's own bookkeeping (C_CloseSession, C_CloseAllSessions, C_GetSessionInfo,
 * C_FindObjectsFinal, C_GetFunctionStatus, C_CancelFunction) and length queries (a NULL
 * output buffer), which a real driver answers without sending a command. Slot calls
 * (C_GetSlotList, C_GetSlotInfo, C_GetMechanism*) see a removal but never wait.
 */
#include "p11sim.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

struct sim sim = {.lock = PTHREAD_MUTEX_INITIALIZER,
                  .idle = PTHREAD_COND_INITIALIZER,
                  .module_lock = PTHREAD_MUTEX_INITIALIZER};

static CK_FUNCTION_LIST sim_functions;

void
sim_lock(void)
{
	p11mux_lock(&sim.lock);
}

void
sim_unlock(void)
{
	p11mux_unlock(&sim.lock);
}

static void
vlog(const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "p11sim[%ld]: %s\n", (long)getpid(), msg);
}

void
sim_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void
sim_debug(const char *fmt, ...)
{
	va_list ap;

	if (!sim.cfg.debug)
		return;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

int
sim_finalizing(void)
{
	return __atomic_load_n(&sim.finalizing, __ATOMIC_ACQUIRE);
}

CK_RV
sim_enter(void)
{
	CK_RV rv = CKR_OK;
	int locking = 0;

	sim_lock();
	if (!sim.initialized || sim.pid != getpid() || sim.finalizing)
		rv = CKR_CRYPTOKI_NOT_INITIALIZED;
	else
		sim.active++;
	locking = rv == CKR_OK && sim.module_locking;
	sim_unlock();
	/* OpenSC's sc_pkcs11_lock(): one mutex for the whole module, taken at the start of every
	 * function and held through the card exchange (src/pkcs11/pkcs11-object.c). */
	if (locking)
		p11mux_lock(&sim.module_lock);
	return rv;
}

void
sim_leave(void)
{
	/* Fixed while a call is active: C_Finalize waits for every call before it changes. */
	if (sim.module_locking)
		p11mux_unlock(&sim.module_lock);
	sim_lock();
	if (--sim.active == 0)
		pthread_cond_broadcast(&sim.idle);
	sim_unlock();
}

static struct sim_token *
token_for_slot_locked(CK_SLOT_ID slot)
{
	size_t i;

	for (i = 0; i < sim.ntokens; i++)
		if (sim.tokens[i]->slot == slot)
			return sim.tokens[i];
	return NULL;
}

struct sim_token *
sim_token_for_slot(CK_SLOT_ID slot)
{
	struct sim_token *t;

	sim_lock();
	t = token_for_slot_locked(slot);
	sim_unlock();
	return t;
}

static void
copy_field(char *dst, const unsigned char *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
	while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		dst[--n] = '\0';
}

struct slot_label {
	CK_SLOT_ID slot;
	int known;
	char label[33], serial[17];
};

/* Whether another token than slots[self] has the label `label`. */
static int
label_shared(const struct slot_label *slots, CK_ULONG n, CK_ULONG self, const char *label)
{
	CK_ULONG i;
	size_t k;
	int shared = 0;

	for (i = 0; i < n && !shared; i++)
		shared = i != self && strcmp(slots[i].label, label) == 0;
	sim_lock();
	for (k = 0; k < sim.ntokens && !shared; k++)
		shared = sim.tokens[k]->slot != slots[self].slot &&
		         strcmp(sim.tokens[k]->label, label) == 0;
	sim_unlock();
	return shared;
}

/* Adds a token for each slot of `slots` we do not know yet (the wrapped module may add slots
 * while it runs). Called without sim.lock: reading a token's label is a call into the wrapped
 * module. Returns CKR_OK or CKR_HOST_MEMORY. */
static CK_RV
tokens_add(const CK_SLOT_ID *slots, CK_ULONG n)
{
	struct sim_token *t, **grown;
	struct slot_label *sl;
	CK_TOKEN_INFO ti;
	const char *name;
	CK_RV rv = CKR_OK;
	CK_ULONG i;

	if ((sl = calloc(n + 1, sizeof(*sl))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < n; i++) {
		sl[i].slot = slots[i];
		if ((sl[i].known = sim_token_for_slot(slots[i]) != NULL))
			continue;
		if (sim.f->C_GetTokenInfo(slots[i], &ti) == CKR_OK) {
			copy_field(sl[i].label, ti.label, sizeof(ti.label));
			copy_field(sl[i].serial, ti.serialNumber, sizeof(ti.serialNumber));
		}
	}
	for (i = 0; i < n; i++) {
		if (sl[i].known)
			continue;
		/* The control file is named after the label; devices that share theirs (as
		 * SmartCard-HSMs do) are told apart by serial number. */
		name = sl[i].label;
		if (sl[i].serial[0] != '\0' && label_shared(sl, n, i, sl[i].label))
			name = sl[i].serial;
		if ((t = token_new(slots[i], sl[i].label, sl[i].serial, name)) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		sim_lock();
		if (token_for_slot_locked(slots[i]) != NULL) {
			sim_unlock();
			token_free(t);
			continue;
		}
		grown = realloc(sim.tokens, (sim.ntokens + 1) * sizeof(*grown));
		if (grown == NULL) {
			sim_unlock();
			token_free(t);
			rv = CKR_HOST_MEMORY;
			break;
		}
		sim.tokens = grown;
		sim.tokens[sim.ntokens++] = t;
		sim_unlock();
		sim_debug("slot %lu: token '%s' (serial %s)%s%s", (unsigned long)t->slot, t->label,
		          t->serial, t->ctl_path != NULL ? ", control file " : "",
		          t->ctl_path != NULL ? t->ctl_path : "");
	}
	free(sl);
	return rv;
}

/* The wrapped module's slot list (all slots or those with a token); *out is malloc'ed. */
static CK_RV
wrapped_slots(CK_BBOOL present, CK_SLOT_ID **out, CK_ULONG *n)
{
	CK_SLOT_ID *list = NULL, *grown;
	CK_ULONG count;
	CK_RV rv;
	int tries;

	for (tries = 0; tries < 5; tries++) {
		if ((rv = sim.f->C_GetSlotList(present, NULL, &count)) != CKR_OK)
			goto fail;
		if ((grown = realloc(list, (count + 1) * sizeof(*list))) == NULL) {
			rv = CKR_HOST_MEMORY;
			goto fail;
		}
		list = grown;
		rv = sim.f->C_GetSlotList(present, list, &count);
		if (rv == CKR_OK) {
			*out = list;
			*n = count;
			return CKR_OK;
		}
		if (rv != CKR_BUFFER_TOO_SMALL)
			goto fail;
	}
fail:
	free(list);
	return rv;
}

/* Frees what C_Initialize built; sim.lock held, no call in progress. */
static void
sim_free_locked(void)
{
	size_t i;

	session_drop_all_locked();
	for (i = 0; i < sim.ntokens; i++)
		token_free(sim.tokens[i]);
	free(sim.tokens);
	sim.tokens = NULL;
	sim.ntokens = 0;
	config_free(&sim.cfg);
}

static CK_RV
load_module_locked(const char *path)
{
	CK_C_GetFunctionList getfl;
	CK_FUNCTION_LIST *f;
	void *dl;
	CK_RV rv;

	/* Loaded once per process and never unloaded: modules leave handlers behind. */
	if ((dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		sim_log("cannot load the wrapped module %s: %s", path, dlerror());
		return CKR_GENERAL_ERROR;
	}
	if ((getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) == NULL) {
		sim_log("%s is not a PKCS#11 module (no C_GetFunctionList)", path);
		return CKR_GENERAL_ERROR;
	}
	if ((rv = getfl(&f)) != CKR_OK || f == NULL) {
		sim_log("%s: C_GetFunctionList failed (0x%lx)", path, (unsigned long)rv);
		return CKR_GENERAL_ERROR;
	}
	if (f == &sim_functions) {
		sim_log("%s is p11sim itself", path);
		return CKR_GENERAL_ERROR;
	}
	sim.dl = dl;
	sim.f = f;
	return CKR_OK;
}

static CK_RV
sim_C_Initialize(CK_VOID_PTR init_args)
{
	CK_C_INITIALIZE_ARGS *a = init_args, wargs;
	const char *reserved = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG nslots = 0;
	struct stat st;
	int callbacks;
	CK_RV rv;

	if (a != NULL) {
		callbacks = (a->CreateMutex != NULL) + (a->DestroyMutex != NULL) +
		            (a->LockMutex != NULL) + (a->UnlockMutex != NULL);
		if (callbacks != 0 && callbacks != 4)
			return CKR_ARGUMENTS_BAD;
		/* We lock with pthreads: fine when the application allows OS locking. */
		if (callbacks == 4 && !(a->flags & CKF_OS_LOCKING_OK))
			return CKR_CANT_LOCK;
		/* NSS's LibraryParameters ("key=value;key=value"). */
		reserved = a->pReserved;
	}
	sim_lock();
	if ((sim.initialized || sim.initializing) && sim.pid == getpid()) {
		sim_unlock();
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	}
	if (sim.initialized) {
		/* A forked child: what the parent built may be in use by threads that were not
		 * copied; leave it (and its memory) alone and start afresh. */
		memset(sim.sessions, 0, sizeof(sim.sessions));
		sim.tokens = NULL;
		sim.ntokens = 0;
		memset(&sim.cfg, 0, sizeof(sim.cfg));
		sim.initialized = 0;
		sim.initializing = 0;
		sim.active = 0;
		sim.finalizing = 0;
		/* Another thread of the parent may have held it at fork time. */
		pthread_mutex_init(&sim.module_lock, NULL);
	}
	if (config_load(&sim.cfg, reserved) != 0) {
		rv = CKR_GENERAL_ERROR;
		goto fail;
	}
	if (sim.cfg.control_dir != NULL &&
	    (stat(sim.cfg.control_dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
		/* A typo here would silently turn every fault off. */
		sim_log("control_dir %s is not a directory", sim.cfg.control_dir);
		rv = CKR_GENERAL_ERROR;
		goto fail;
	}
	if (sim.f == NULL && (rv = load_module_locked(sim.cfg.module)) != CKR_OK)
		goto fail;
	memset(&wargs, 0, sizeof(wargs));
	wargs.flags = CKF_OS_LOCKING_OK;
	rv = sim.f->C_Initialize(&wargs);
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		/* Someone else in this process uses it too (or our parent did): theirs to end. */
		sim.own_init = 0;
	} else if (rv != CKR_OK) {
		sim_log("%s: C_Initialize failed (0x%lx)", sim.cfg.module, (unsigned long)rv);
		goto fail;
	} else {
		sim.own_init = 1;
	}
	sim.pid = getpid();
	sim.initializing = 1;
	sim.module_locking = config_module_lock(&sim.cfg);
	sim_unlock();

	/* The tokens the module has now; calls cannot come in yet (not initialized). */
	if ((rv = wrapped_slots(CK_FALSE, &slots, &nslots)) == CKR_OK)
		rv = tokens_add(slots, nslots);
	free(slots);
	sim_lock();
	if (rv != CKR_OK) {
		if (sim.own_init)
			sim.f->C_Finalize(NULL);
		goto fail;
	}
	sim.initialized = 1;
	sim.initializing = 0;
	sim_unlock();
	sim_debug("wrapping %s, scale %g, %zu slots, control dir %s, module lock %s",
	          sim.cfg.module, sim.cfg.scale, sim.ntokens,
	          sim.cfg.control_dir != NULL ? sim.cfg.control_dir : "(none)",
	          sim.module_locking ? "yes" : "no");
	return CKR_OK;
fail:
	sim_free_locked();
	sim.initializing = 0;
	sim_unlock();
	return rv == CKR_OK ? CKR_GENERAL_ERROR : rv;
}

static CK_RV
sim_C_Finalize(CK_VOID_PTR reserved)
{
	CK_RV rv = CKR_OK;
	size_t i;

	if (reserved != NULL)
		return CKR_ARGUMENTS_BAD;
	sim_lock();
	if (!sim.initialized || sim.pid != getpid() || sim.finalizing) {
		sim_unlock();
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	}
	/* Calls waiting for a device, or blocked by a hang, give up; then we wait for the
	 * calls still inside the wrapped module. */
	__atomic_store_n(&sim.finalizing, 1, __ATOMIC_RELEASE);
	for (i = 0; i < sim.ntokens; i++) {
		p11mux_lock(&sim.tokens[i]->lock);
		pthread_cond_broadcast(&sim.tokens[i]->turn);
		p11mux_unlock(&sim.tokens[i]->lock);
	}
	while (sim.active > 0)
		pthread_cond_wait(&sim.idle, &sim.lock);
	if (sim.own_init)
		rv = sim.f->C_Finalize(NULL);
	sim_free_locked();
	sim.initialized = 0;
	__atomic_store_n(&sim.finalizing, 0, __ATOMIC_RELEASE);
	sim_unlock();
	return rv;
}

static void
pad(unsigned char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);

	memset(dst, ' ', n);
	memcpy(dst, src, len < n ? len : n);
}

static CK_RV
sim_C_GetInfo(CK_INFO_PTR info)
{
	CK_RV rv;

	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	rv = sim.f->C_GetInfo(info);
	if (rv == CKR_OK) {
		info->cryptokiVersion.major = 2;
		info->cryptokiVersion.minor = 40;
		pad(info->manufacturerID, sizeof(info->manufacturerID), "p11mux");
		pad(info->libraryDescription, sizeof(info->libraryDescription),
		    "p11sim simulated USB HSMs");
		info->libraryVersion.major = 0;
		info->libraryVersion.minor = 1;
	}
	sim_leave();
	return rv;
}

static CK_RV
sim_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	*list = &sim_functions;
	return CKR_OK;
}

EXPORT CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	return sim_C_GetFunctionList(list);
}

/* ---------------------------------------------------------------- slots and tokens */

static CK_RV
sim_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	CK_SLOT_ID *all = NULL;
	CK_ULONG n = 0, i, k = 0;
	struct sim_token *t;
	CK_RV rv;

	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	if ((rv = wrapped_slots(present, &all, &n)) != CKR_OK)
		goto out;
	if ((rv = tokens_add(all, n)) != CKR_OK)
		goto out;
	for (i = 0; i < n; i++) {
		if (present && (t = sim_token_for_slot(all[i])) != NULL) {
			token_poll(t);
			if (!token_present(t))
				continue;
		}
		all[k++] = all[i];
	}
	if (list != NULL) {
		if (*count < k) {
			rv = CKR_BUFFER_TOO_SMALL;
		} else if (k > 0) {
			memcpy(list, all, k * sizeof(*list));
		}
	}
	*count = k;
out:
	free(all);
	sim_leave();
	return rv;
}

static CK_RV
sim_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	struct sim_token *t;
	CK_RV rv;

	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	rv = sim.f->C_GetSlotInfo(slot, info);
	if (rv == CKR_OK && (t = sim_token_for_slot(slot)) != NULL) {
		/* A USB device in a reader slot that stays when the device is pulled out. */
		info->flags |= CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
		token_poll(t);
		if (!token_present(t))
			info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
	}
	sim_leave();
	return rv;
}

static CK_RV
sim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	struct sim_call c;
	CK_RV rv;

	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = call_slot_begin(&c, slot, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	rv = sim.f->C_GetTokenInfo(slot, info);
	if (rv == CKR_OK) {
		/* The device's PIN counter, not the wrapped module's (SoftHSM has none). */
		info->flags &= ~(CK_FLAGS)(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY |
		                           CKF_USER_PIN_LOCKED);
		info->flags |= token_pin_flags(c.tok);
	}
	return call_end(&c, rv);
}

static CK_RV
sim_C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved)
{
	CK_RV rv;

	/* Not counted as a call in progress: the wrapped module ends a blocking wait only in
	 * its own C_Finalize, which ours calls after waiting for the calls in progress. */
	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	sim_leave();
	return sim.f->C_WaitForSlotEvent(flags, slot, reserved);
}

/* The slot's token, looked at: CKR_TOKEN_NOT_PRESENT when it is removed. */
static CK_RV
slot_present(CK_SLOT_ID slot)
{
	struct sim_token *t;

	if ((t = sim_token_for_slot(slot)) == NULL)
		return CKR_OK; /* the wrapped module answers for slots it does not have */
	token_poll(t);
	return token_present(t) ? CKR_OK : CKR_TOKEN_NOT_PRESENT;
}

static CK_RV
sim_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	CK_RV rv;

	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	if ((rv = slot_present(slot)) == CKR_OK)
		rv = sim.f->C_GetMechanismList(slot, list, count);
	sim_leave();
	return rv;
}

static CK_RV
sim_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	CK_RV rv;

	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	if ((rv = slot_present(slot)) == CKR_OK)
		rv = sim.f->C_GetMechanismInfo(slot, type, info);
	sim_leave();
	return rv;
}

static CK_RV
sim_C_InitToken(CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG len, CK_UTF8CHAR_PTR label)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_slot_begin(&c, slot, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	rv = sim.f->C_InitToken(slot, pin, len, label);
	if (rv == CKR_OK)
		token_set_retries(c.tok, (unsigned)c.tok->p.v[P_PIN_RETRIES]);
	return call_end(&c, rv);
}

/* ---------------------------------------------------------------- PINs */

/* Whether the user PIN may be tried now; CKR_PIN_LOCKED when the device refuses it. */
static CK_RV
pin_check(struct sim_token *t, unsigned *left)
{
	if (token_pin_locked(t))
		return CKR_PIN_LOCKED;
	if ((*left = token_retries(t)) == 0)
		return CKR_PIN_LOCKED;
	return CKR_OK;
}

/* Counts a user PIN verification the wrapped module answered with `rv`. */
static void
pin_count(struct sim_token *t, unsigned left, CK_RV rv)
{
	if (rv == CKR_PIN_INCORRECT) {
		token_set_retries(t, left - 1);
		if (left == 1)
			sim_debug("%s: wrong PIN, the PIN is now locked", t->name);
		else
			sim_debug("%s: wrong PIN, %u tries left", t->name, left - 1);
	} else if (rv == CKR_OK) {
		token_set_retries(t, (unsigned)t->p.v[P_PIN_RETRIES]);
	}
}

static CK_RV
sim_C_InitPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_LOGIN, ERR_BEFORE)) != CKR_OK)
		return rv;
	/* The SO sets a new user PIN: as on the device, that unblocks it. */
	rv = sim.f->C_InitPIN(c.inner, pin, len);
	if (rv == CKR_OK)
		token_set_retries(c.tok, (unsigned)c.tok->p.v[P_PIN_RETRIES]);
	return call_end(&c, rv);
}

static CK_RV
sim_C_SetPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR old, CK_ULONG oldlen, CK_UTF8CHAR_PTR pin,
             CK_ULONG len)
{
	CK_SESSION_INFO si;
	struct sim_call c;
	unsigned left = 0;
	int user;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_LOGIN, ERR_BEFORE)) != CKR_OK)
		return rv;
	/* Outside an SO session it is the user PIN that is checked and counted. */
	user = sim.f->C_GetSessionInfo(c.inner, &si) != CKR_OK || si.state != CKS_RW_SO_FUNCTIONS;
	if (user && (rv = pin_check(c.tok, &left)) != CKR_OK)
		return call_end(&c, rv);
	rv = sim.f->C_SetPIN(c.inner, old, oldlen, pin, len);
	if (user)
		pin_count(c.tok, left, rv);
	return call_end(&c, rv);
}

static CK_RV
sim_C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
	struct sim_call c;
	unsigned left = 0;
	int user = type == CKU_USER || type == CKU_CONTEXT_SPECIFIC;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_LOGIN, ERR_BEFORE)) != CKR_OK)
		return rv;
	/* A locked PIN is refused by the device, the right PIN included. */
	if (user && (rv = pin_check(c.tok, &left)) != CKR_OK)
		return call_end(&c, rv);
	rv = sim.f->C_Login(c.inner, type, pin, len);
	if (user)
		pin_count(c.tok, left, rv);
	return call_end(&c, rv);
}

static CK_RV
sim_C_Logout(CK_SESSION_HANDLE h)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_Logout(c.inner));
}

/* ---------------------------------------------------------------- sessions */

static CK_RV
sim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                  CK_SESSION_HANDLE_PTR out)
{
	CK_SESSION_HANDLE inner = 0, h = 0;
	struct sim_call c;
	CK_RV rv;

	(void)app;
	(void)notify; /* the wrapped module would call it with its own handle */
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = call_slot_begin(&c, slot, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	rv = sim.f->C_OpenSession(slot, flags, NULL, NULL, &inner);
	if (rv == CKR_OK && (h = session_add(c.tok, inner, c.epoch)) == 0) {
		sim.f->C_CloseSession(inner);
		rv = CKR_HOST_MEMORY;
	}
	c.new_session = h;
	if ((rv = call_end(&c, rv)) == CKR_OK)
		*out = h;
	return rv;
}

static CK_RV
sim_C_CloseSession(CK_SESSION_HANDLE h)
{
	struct sim_call c;
	CK_RV rv;

	rv = call_session_begin(&c, h, COST_NONE, ERR_NEVER);
	if (rv == CKR_DEVICE_REMOVED || rv == CKR_SESSION_HANDLE_INVALID) {
		/* Gone with the device: our record goes now. */
		session_drop(h);
		return rv;
	}
	if (rv != CKR_OK)
		return rv;
	rv = sim.f->C_CloseSession(c.inner);
	if (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID)
		session_drop(h);
	return call_end(&c, rv);
}

static CK_RV
sim_C_CloseAllSessions(CK_SLOT_ID slot)
{
	struct sim_call c;
	CK_RV rv;

	rv = call_slot_begin(&c, slot, COST_NONE, ERR_NEVER);
	if (rv == CKR_TOKEN_NOT_PRESENT) {
		/* The wrapped sessions were closed at the removal. */
		session_drop_token(sim_token_for_slot(slot));
		return CKR_OK;
	}
	if (rv != CKR_OK)
		return rv;
	session_drop_token(c.tok);
	return call_end(&c, sim.f->C_CloseAllSessions(slot));
}

static CK_RV
sim_C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_NONE, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GetSessionInfo(c.inner, info));
}

static CK_RV
sim_C_GetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR state, CK_ULONG_PTR len)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, state == NULL ? COST_NONE : COST_OTHER, ERR_BEFORE)) !=
	    CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GetOperationState(c.inner, state, len));
}

static CK_RV
sim_C_SetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR state, CK_ULONG len, CK_OBJECT_HANDLE enc,
                        CK_OBJECT_HANDLE auth)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_SetOperationState(c.inner, state, len, enc, auth));
}

/* ---------------------------------------------------------------- objects */

static CK_RV
sim_C_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR obj)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_CreateObject(c.inner, tmpl, n, obj));
}

static CK_RV
sim_C_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                 CK_OBJECT_HANDLE_PTR out)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_CopyObject(c.inner, obj, tmpl, n, out));
}

static CK_RV
sim_C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	rv = sim.f->C_DestroyObject(c.inner, obj);
	if (rv == CKR_OK)
		call_forget_key(&c, obj);
	return call_end(&c, rv);
}

static CK_RV
sim_C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ULONG_PTR size)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GetObjectSize(c.inner, obj, size));
}

static CK_RV
sim_C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                        CK_ULONG n)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_GETATTR, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GetAttributeValue(c.inner, obj, tmpl, n));
}

static CK_RV
sim_C_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                        CK_ULONG n)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_SetAttributeValue(c.inner, obj, tmpl, n));
}

static CK_RV
sim_C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_FindObjectsInit(c.inner, tmpl, n));
}

static CK_RV
sim_C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR objs, CK_ULONG max, CK_ULONG_PTR count)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_FIND, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_FindObjects(c.inner, objs, max, count));
}

static CK_RV
sim_C_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_NONE, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_FindObjectsFinal(c.inner));
}

/* ---------------------------------------------------------------- cryptographic operations */

/* An operation that ends with output `out`: a NULL buffer only asks for the length (the
 * driver answers it); otherwise the device works, and an injected error comes after the
 * wrapped call, which has ended the operation as a failure would. */
#define OUT_COST(out, cost) ((out) == NULL ? COST_NONE : (cost))
#define OUT_ERR(out)        ((out) == NULL ? ERR_NEVER : ERR_AFTER)

enum op_kind { OP_ENCRYPT, OP_DECRYPT, OP_SIGN, OP_SIGN_RECOVER, OP_VERIFY, OP_VERIFY_RECOVER };

/* C_*Init with a key: a short command; remembers a private key's size for the operation's
 * time. */
static CK_RV
op_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key, enum op_kind kind)
{
	struct sim_keyinfo ki;
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	ki = call_key(&c, key);
	switch (kind) {
	case OP_ENCRYPT:
		rv = sim.f->C_EncryptInit(c.inner, mech, key);
		break;
	case OP_DECRYPT:
		rv = sim.f->C_DecryptInit(c.inner, mech, key);
		break;
	case OP_SIGN:
		rv = sim.f->C_SignInit(c.inner, mech, key);
		break;
	case OP_SIGN_RECOVER:
		rv = sim.f->C_SignRecoverInit(c.inner, mech, key);
		break;
	case OP_VERIFY:
		rv = sim.f->C_VerifyInit(c.inner, mech, key);
		break;
	case OP_VERIFY_RECOVER:
	default:
		rv = sim.f->C_VerifyRecoverInit(c.inner, mech, key);
		break;
	}
	if (rv == CKR_OK && kind == OP_DECRYPT)
		session_set_key(h, 1, &ki);
	else if (rv == CKR_OK && (kind == OP_SIGN || kind == OP_SIGN_RECOVER))
		session_set_key(h, 0, &ki);
	return call_end(&c, rv);
}

static CK_RV
sim_C_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_ENCRYPT);
}

static CK_RV
sim_C_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
              CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), OUT_ERR(out))) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_Encrypt(c.inner, in, inlen, out, outlen));
}

static CK_RV
sim_C_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
                    CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_EncryptUpdate(c.inner, in, inlen, out, outlen));
}

static CK_RV
sim_C_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), OUT_ERR(out))) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_EncryptFinal(c.inner, out, outlen));
}

static CK_RV
sim_C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_DECRYPT);
}

static CK_RV
sim_C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
              CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_DECRYPT), OUT_ERR(out))) != CKR_OK)
		return rv;
	call_crash_point(&c, in, inlen);
	rv = sim.f->C_Decrypt(c.inner, in, inlen, out, outlen);
	if (out != NULL && rv != CKR_BUFFER_TOO_SMALL && call_rejects(&c, in, inlen)) {
		if (rv == CKR_OK)
			explicit_bzero(out, *outlen);
		rv = CKR_GENERAL_ERROR; /* the operation has ended, as after any failure */
	}
	return call_end(&c, rv);
}

static CK_RV
sim_C_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
                    CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_DecryptUpdate(c.inner, in, inlen, out, outlen));
}

static CK_RV
sim_C_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_DECRYPT), OUT_ERR(out))) != CKR_OK)
		return rv;
	call_crash_point(&c, NULL, 0);
	return call_end(&c, sim.f->C_DecryptFinal(c.inner, out, outlen));
}

static CK_RV
sim_C_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_DigestInit(c.inner, mech));
}

static CK_RV
sim_C_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
             CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), OUT_ERR(out))) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_Digest(c.inner, in, inlen, out, outlen));
}

static CK_RV
sim_C_DigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_DigestUpdate(c.inner, in, inlen));
}

static CK_RV
sim_C_DigestKey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_DigestKey(c.inner, key));
}

static CK_RV
sim_C_DigestFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), OUT_ERR(out))) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_DigestFinal(c.inner, out, outlen));
}

static CK_RV
sim_C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_SIGN);
}

static CK_RV
sim_C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig,
           CK_ULONG_PTR siglen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(sig, COST_SIGN), OUT_ERR(sig))) != CKR_OK)
		return rv;
	call_crash_point(&c, in, inlen);
	rv = sim.f->C_Sign(c.inner, in, inlen, sig, siglen);
	if (sig != NULL && rv != CKR_BUFFER_TOO_SMALL && call_rejects(&c, in, inlen)) {
		if (rv == CKR_OK)
			explicit_bzero(sig, *siglen);
		rv = CKR_GENERAL_ERROR; /* the operation has ended, as after any failure */
	}
	return call_end(&c, rv);
}

static CK_RV
sim_C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_SignUpdate(c.inner, in, inlen));
}

static CK_RV
sim_C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(sig, COST_SIGN), OUT_ERR(sig))) != CKR_OK)
		return rv;
	call_crash_point(&c, NULL, 0);
	return call_end(&c, sim.f->C_SignFinal(c.inner, sig, siglen));
}

static CK_RV
sim_C_SignRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_SIGN_RECOVER);
}

static CK_RV
sim_C_SignRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig,
                  CK_ULONG_PTR siglen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(sig, COST_SIGN), OUT_ERR(sig))) != CKR_OK)
		return rv;
	call_crash_point(&c, in, inlen);
	return call_end(&c, sim.f->C_SignRecover(c.inner, in, inlen, sig, siglen));
}

static CK_RV
sim_C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_VERIFY);
}

static CK_RV
sim_C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig, CK_ULONG siglen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_AFTER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_Verify(c.inner, in, inlen, sig, siglen));
}

static CK_RV
sim_C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_VerifyUpdate(c.inner, in, inlen));
}

static CK_RV
sim_C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_AFTER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_VerifyFinal(c.inner, sig, siglen));
}

static CK_RV
sim_C_VerifyRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	return op_init(h, mech, key, OP_VERIFY_RECOVER);
}

static CK_RV
sim_C_VerifyRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen, CK_BYTE_PTR out,
                    CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), OUT_ERR(out))) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_VerifyRecover(c.inner, sig, siglen, out, outlen));
}

/* The dual-function updates: short commands, never failed (see the Update calls). */
#define DUAL(name)                                                                                 \
	static CK_RV sim_C_##name(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen,             \
	                          CK_BYTE_PTR out, CK_ULONG_PTR outlen)                            \
	{                                                                                          \
		struct sim_call c;                                                                 \
		CK_RV rv;                                                                          \
                                                                                                   \
		if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER), ERR_NEVER)) !=      \
		    CKR_OK)                                                                        \
			return rv;                                                                 \
		return call_end(&c, sim.f->C_##name(c.inner, in, inlen, out, outlen));             \
	}

DUAL(DigestEncryptUpdate)
DUAL(DecryptDigestUpdate)
DUAL(SignEncryptUpdate)
DUAL(DecryptVerifyUpdate)

/* ---------------------------------------------------------------- keys and random */

static CK_RV
sim_C_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                  CK_OBJECT_HANDLE_PTR key)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GenerateKey(c.inner, mech, tmpl, n, key));
}

static CK_RV
sim_C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pubt,
                      CK_ULONG npub, CK_ATTRIBUTE_PTR privt, CK_ULONG npriv,
                      CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(
	        &c, sim.f->C_GenerateKeyPair(c.inner, mech, pubt, npub, privt, npriv, pub, priv));
}

static CK_RV
sim_C_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE wrapping,
              CK_OBJECT_HANDLE key, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, OUT_COST(out, COST_OTHER),
	                             out == NULL ? ERR_NEVER : ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_WrapKey(c.inner, mech, wrapping, key, out, outlen));
}

static CK_RV
sim_C_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE unwrapping,
                CK_BYTE_PTR in, CK_ULONG inlen, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                CK_OBJECT_HANDLE_PTR key)
{
	struct sim_keyinfo ki;
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	/* Unwrapping with a private key is a private-key operation (RSA key exchange). */
	ki = call_key(&c, unwrapping);
	call_charge_key(&c, &ki);
	return call_end(&c, sim.f->C_UnwrapKey(c.inner, mech, unwrapping, in, inlen, tmpl, n, key));
}

static CK_RV
sim_C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE base,
                CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key)
{
	struct sim_keyinfo ki;
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	/* ECDH with a private key costs what a signature with it costs. */
	ki = call_key(&c, base);
	call_charge_key(&c, &ki);
	return call_end(&c, sim.f->C_DeriveKey(c.inner, mech, base, tmpl, n, key));
}

static CK_RV
sim_C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_SeedRandom(c.inner, seed, len));
}

static CK_RV
sim_C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_OTHER, ERR_BEFORE)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GenerateRandom(c.inner, out, len));
}

static CK_RV
sim_C_GetFunctionStatus(CK_SESSION_HANDLE h)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_NONE, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_GetFunctionStatus(c.inner));
}

static CK_RV
sim_C_CancelFunction(CK_SESSION_HANDLE h)
{
	struct sim_call c;
	CK_RV rv;

	if ((rv = call_session_begin(&c, h, COST_NONE, ERR_NEVER)) != CKR_OK)
		return rv;
	return call_end(&c, sim.f->C_CancelFunction(c.inner));
}

static CK_FUNCTION_LIST sim_functions = {
        {2, 40},
        sim_C_Initialize,
        sim_C_Finalize,
        sim_C_GetInfo,
        sim_C_GetFunctionList,
        sim_C_GetSlotList,
        sim_C_GetSlotInfo,
        sim_C_GetTokenInfo,
        sim_C_GetMechanismList,
        sim_C_GetMechanismInfo,
        sim_C_InitToken,
        sim_C_InitPIN,
        sim_C_SetPIN,
        sim_C_OpenSession,
        sim_C_CloseSession,
        sim_C_CloseAllSessions,
        sim_C_GetSessionInfo,
        sim_C_GetOperationState,
        sim_C_SetOperationState,
        sim_C_Login,
        sim_C_Logout,
        sim_C_CreateObject,
        sim_C_CopyObject,
        sim_C_DestroyObject,
        sim_C_GetObjectSize,
        sim_C_GetAttributeValue,
        sim_C_SetAttributeValue,
        sim_C_FindObjectsInit,
        sim_C_FindObjects,
        sim_C_FindObjectsFinal,
        sim_C_EncryptInit,
        sim_C_Encrypt,
        sim_C_EncryptUpdate,
        sim_C_EncryptFinal,
        sim_C_DecryptInit,
        sim_C_Decrypt,
        sim_C_DecryptUpdate,
        sim_C_DecryptFinal,
        sim_C_DigestInit,
        sim_C_Digest,
        sim_C_DigestUpdate,
        sim_C_DigestKey,
        sim_C_DigestFinal,
        sim_C_SignInit,
        sim_C_Sign,
        sim_C_SignUpdate,
        sim_C_SignFinal,
        sim_C_SignRecoverInit,
        sim_C_SignRecover,
        sim_C_VerifyInit,
        sim_C_Verify,
        sim_C_VerifyUpdate,
        sim_C_VerifyFinal,
        sim_C_VerifyRecoverInit,
        sim_C_VerifyRecover,
        sim_C_DigestEncryptUpdate,
        sim_C_DecryptDigestUpdate,
        sim_C_SignEncryptUpdate,
        sim_C_DecryptVerifyUpdate,
        sim_C_GenerateKey,
        sim_C_GenerateKeyPair,
        sim_C_WrapKey,
        sim_C_UnwrapKey,
        sim_C_DeriveKey,
        sim_C_SeedRandom,
        sim_C_GenerateRandom,
        sim_C_GetFunctionStatus,
        sim_C_CancelFunction,
        sim_C_WaitForSlotEvent,
};
