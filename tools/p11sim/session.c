/*
 * Our session handles. Each names a session of the wrapped module on one token, opened in one
 * epoch of that token: after a removal the wrapped session is gone, and ours says so
 * (CKR_DEVICE_REMOVED, then CKR_SESSION_HANDLE_INVALID) until the application closes it. Our
 * handles only grow, so a handle from before a removal never names a newer session, whereas
 * the wrapped module may give its numbers out again.
 */
#include "p11sim.h"

#include <stdlib.h>

struct sim_session {
	CK_SESSION_HANDLE handle, inner;
	struct sim_token *tok;
	uint64_t epoch;
	struct sim_keyinfo sign, decrypt; /* keys of the operations in progress */
	struct sim_session *next;
};

static struct sim_session **
bucket(CK_SESSION_HANDLE h)
{
	return &sim.sessions[h % SIM_SESSION_BUCKETS];
}

CK_SESSION_HANDLE
session_add(struct sim_token *tok, CK_SESSION_HANDLE inner, uint64_t epoch)
{
	struct sim_session *s, **b;
	CK_SESSION_HANDLE h;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return 0;
	s->inner = inner;
	s->tok = tok;
	s->epoch = epoch;
	sim_lock();
	h = s->handle = ++sim.next_session;
	b = bucket(h);
	s->next = *b;
	*b = s;
	sim_unlock();
	return h;
}

static struct sim_session *
find_locked(CK_SESSION_HANDLE h)
{
	struct sim_session *s;

	for (s = *bucket(h); s != NULL; s = s->next)
		if (s->handle == h)
			return s;
	return NULL;
}

CK_RV
session_get_locked(CK_SESSION_HANDLE h, struct sim_token **tok, CK_SESSION_HANDLE *inner,
                   uint64_t *epoch, struct sim_keyinfo *sign, struct sim_keyinfo *decrypt)
{
	struct sim_session *s;

	if (h == 0 || (s = find_locked(h)) == NULL)
		return CKR_SESSION_HANDLE_INVALID;
	*tok = s->tok;
	*inner = s->inner;
	*epoch = s->epoch;
	*sign = s->sign;
	*decrypt = s->decrypt;
	return CKR_OK;
}

void
session_set_key(CK_SESSION_HANDLE h, int decrypt, const struct sim_keyinfo *ki)
{
	struct sim_session *s;

	sim_lock();
	if ((s = find_locked(h)) != NULL) {
		if (decrypt)
			s->decrypt = *ki;
		else
			s->sign = *ki;
	}
	sim_unlock();
}

void
session_drop(CK_SESSION_HANDLE h)
{
	struct sim_session *s, **pp;

	sim_lock();
	for (pp = bucket(h); (s = *pp) != NULL; pp = &s->next)
		if (s->handle == h) {
			*pp = s->next;
			free(s);
			break;
		}
	sim_unlock();
}

void
session_drop_token(struct sim_token *tok)
{
	struct sim_session *s, **pp;
	size_t i;

	sim_lock();
	for (i = 0; i < SIM_SESSION_BUCKETS; i++)
		for (pp = &sim.sessions[i]; (s = *pp) != NULL;)
			if (s->tok == tok) {
				*pp = s->next;
				free(s);
			} else {
				pp = &s->next;
			}
	sim_unlock();
}

void
session_drop_all_locked(void)
{
	struct sim_session *s, *next;
	size_t i;

	for (i = 0; i < SIM_SESSION_BUCKETS; i++) {
		for (s = sim.sessions[i]; s != NULL; s = next) {
			next = s->next;
			free(s);
		}
		sim.sessions[i] = NULL;
	}
}
