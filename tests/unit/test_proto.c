/*
 * Unit tests of common/proto.c (the call table and the message codec) and common/transport.c
 * (frames). Round trips are driven by the signatures in p11mux_calls[], so a call added to the
 * table is covered without touching this file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "err.h"
#include "proto.h"
#include "sigcodec.h"
#include "thread.h"
#include "transport.h"

/* Variants per call: a multiple of every period sc_gen() uses (8 mechanism kinds, 6 attribute
 * list shapes, 5 byte-string and slot-list shapes, 4 array shapes), so each shape appears. */
#define ROUNDTRIP_VARIANTS 120
/* Variants whose every prefix is decoded (each yields several thousand prefixes). */
#define TRUNC_VARIANTS 10

static const CK_RV REPLY_ERRORS[] = {CKR_PIN_INCORRECT, CKR_DEVICE_ERROR, CKR_SLOT_ID_INVALID,
                                     CKR_BUFFER_TOO_SMALL, (CK_RV)0x80000001UL};

/* --- helpers --- */

/* A fresh buffer holding a copy of p[0..n), as if received in a frame. */
static struct p11mux_buf *
buf_from(const uint8_t *p, size_t n)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);

	assert_non_null(b);
	/* Nothing to put for n == 0: putting 0 bytes into a fresh buffer is the known NULL + 0
	 * bug (bug_frame_zero_length_into_fresh_buffer), kept out of the regular tests. */
	if (n > 0)
		assert_int_equal(p11mux_buf_put(b, p, n), 0);
	return b;
}

/* Encodes a request (reply when is_reply) of call with the generated fields; the message must
 * close cleanly. Returns the buffer. */
static struct p11mux_buf *
encode(uint32_t call, int is_reply, CK_RV rv, const struct sc_fields *f)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_msg m = {0};

	assert_non_null(b);
	if (is_reply)
		assert_int_equal(p11mux_msg_begin_reply(&m, b, call, rv), 0);
	else
		assert_int_equal(p11mux_msg_begin_request(&m, b, call), 0);
	assert_int_equal(sc_encode(&m, f), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	p11mux_msg_clear(&m);
	return b;
}

/* Decodes buf as a request, or as a reply to call: header, every field, end. Returns the
 * first error; *rv gets the reply's CK_RV. The decoded fields live until msg_clear. */
static int
decode(struct p11mux_msg *m, struct p11mux_buf *b, uint32_t call, int is_reply, CK_RV *rv,
       struct sc_fields *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	if (is_reply)
		r = p11mux_msg_read_reply(m, b, call, rv);
	else
		r = p11mux_msg_read_request(m, b);
	if (r != 0)
		return r;
	if ((r = sc_decode(m, out)) != 0)
		return r;
	return p11mux_msg_end(m);
}

/* What a round trip has met, so a test can check that its inputs were not degenerate. */
struct coverage {
	unsigned ulong_attr, byte_attr, refused_attr, refused_with_buffer, no_value_attr;
	unsigned empty_attr_list, null_status;
	unsigned mech[SC_MECH_KINDS];
	unsigned slots_with_mechs, empty_slot_list, empty_bytes, big_bytes, empty_ulongs;
};

static void
check_attrs(const struct sc_field *want, const struct sc_field *got, struct coverage *cov)
{
	size_t i;

	assert_int_equal(got->nattrs, want->nattrs);
	assert_non_null(got->status);
	if (want->nattrs == 0)
		cov->empty_attr_list++;
	if (want->status == NULL)
		cov->null_status++;
	for (i = 0; i < want->nattrs; i++) {
		const CK_ATTRIBUTE *wa = &want->attrs[i], *ga = &got->attrs[i];
		CK_RV ws = want->status != NULL ? want->status[i] : CKR_OK;

		assert_int_equal(ga->type, wa->type);
		assert_int_equal(got->status[i], ws);
		if (ws != CKR_OK || wa->pValue == NULL) {
			/* Refused or absent: no value travels, even if the sender had a buffer. */
			assert_null(ga->pValue);
			assert_int_equal(ga->ulValueLen, 0);
			if (ws != CKR_OK)
				cov->refused_attr++;
			if (ws != CKR_OK && wa->pValue != NULL)
				cov->refused_with_buffer++;
			if (ws == CKR_OK)
				cov->no_value_attr++;
			continue;
		}
		assert_int_equal(ga->ulValueLen, wa->ulValueLen);
		if (wa->ulValueLen > 0)
			assert_memory_equal(ga->pValue, wa->pValue, wa->ulValueLen);
		else
			assert_non_null(ga->pValue);
		if (p11mux_attr_is_ulong(wa->type) && wa->ulValueLen == sizeof(CK_ULONG)) {
			/* A CK_ULONG value comes back as an aligned CK_ULONG. */
			assert_int_equal((uintptr_t)ga->pValue % _Alignof(CK_ULONG), 0);
			assert_int_equal(*(const CK_ULONG *)ga->pValue,
			                 *(const CK_ULONG *)wa->pValue);
			cov->ulong_attr++;
		} else {
			cov->byte_attr++;
		}
	}
}

static void
check_mech(const struct sc_field *want, const struct sc_field *got, struct coverage *cov)
{
	const CK_MECHANISM *wm = want->mech, *gm = got->mech;

	assert_non_null(gm);
	assert_int_equal(gm->mechanism, wm->mechanism);
	cov->mech[want->mech_kind]++;
	switch (want->mech_kind) {
	case SC_MECH_NONE:
	case SC_MECH_NONE_PTR:
		assert_null(gm->pParameter);
		assert_int_equal(gm->ulParameterLen, 0);
		break;
	case SC_MECH_PSS:
	case SC_MECH_PSS_HASHED: {
		const CK_RSA_PKCS_PSS_PARAMS *w = wm->pParameter, *g = gm->pParameter;

		assert_int_equal(gm->ulParameterLen, sizeof(*g));
		assert_non_null(g);
		assert_int_equal(g->hashAlg, w->hashAlg);
		assert_int_equal(g->mgf, w->mgf);
		assert_int_equal(g->sLen, w->sLen);
		break;
	}
	case SC_MECH_OAEP_SOURCE:
	case SC_MECH_OAEP_PLAIN: {
		const CK_RSA_PKCS_OAEP_PARAMS *w = wm->pParameter, *g = gm->pParameter;

		assert_int_equal(gm->ulParameterLen, sizeof(*g));
		assert_non_null(g);
		assert_int_equal(g->hashAlg, w->hashAlg);
		assert_int_equal(g->mgf, w->mgf);
		assert_int_equal(g->source, w->source);
		assert_int_equal(g->ulSourceDataLen, w->ulSourceDataLen);
		if (w->ulSourceDataLen > 0)
			assert_memory_equal(g->pSourceData, w->pSourceData, w->ulSourceDataLen);
		else
			assert_null(g->pSourceData);
		break;
	}
	case SC_MECH_AES_CBC_IV:
		assert_int_equal(gm->ulParameterLen, 16);
		assert_memory_equal(gm->pParameter, wm->pParameter, 16);
		break;
	default: {
		/* Raw bytes: copied out, as the pointer may not be aligned for the struct. */
		CK_AES_CTR_PARAMS w, g;

		assert_int_equal(gm->ulParameterLen, sizeof(g));
		memcpy(&w, wm->pParameter, sizeof(w));
		memcpy(&g, gm->pParameter, sizeof(g));
		assert_int_equal(g.ulCounterBits, w.ulCounterBits);
		assert_memory_equal(g.cb, w.cb, sizeof(g.cb));
		break;
	}
	}
}

static void
check_version(CK_VERSION g, CK_VERSION w)
{
	assert_int_equal(g.major, w.major);
	assert_int_equal(g.minor, w.minor);
}

static void
check_slots(const struct sc_field *want, const struct sc_field *got, struct coverage *cov)
{
	size_t i, j;

	assert_int_equal(got->nslots, want->nslots);
	if (want->nslots == 0)
		cov->empty_slot_list++;
	for (i = 0; i < want->nslots; i++) {
		const struct p11mux_slot *w = &want->slots[i], *g = &got->slots[i];

		assert_int_equal(g->id, w->id);
		assert_memory_equal(g->slot.slotDescription, w->slot.slotDescription,
		                    sizeof(w->slot.slotDescription));
		assert_memory_equal(g->slot.manufacturerID, w->slot.manufacturerID,
		                    sizeof(w->slot.manufacturerID));
		assert_int_equal(g->slot.flags, w->slot.flags);
		check_version(g->slot.hardwareVersion, w->slot.hardwareVersion);
		check_version(g->slot.firmwareVersion, w->slot.firmwareVersion);
		assert_memory_equal(g->token.label, w->token.label, sizeof(w->token.label));
		assert_memory_equal(g->token.manufacturerID, w->token.manufacturerID,
		                    sizeof(w->token.manufacturerID));
		assert_memory_equal(g->token.model, w->token.model, sizeof(w->token.model));
		assert_memory_equal(g->token.serialNumber, w->token.serialNumber,
		                    sizeof(w->token.serialNumber));
		assert_int_equal(g->token.flags, w->token.flags);
		assert_int_equal(g->token.ulMaxSessionCount, w->token.ulMaxSessionCount);
		assert_int_equal(g->token.ulSessionCount, w->token.ulSessionCount);
		assert_int_equal(g->token.ulMaxRwSessionCount, w->token.ulMaxRwSessionCount);
		assert_int_equal(g->token.ulRwSessionCount, w->token.ulRwSessionCount);
		assert_int_equal(g->token.ulMaxPinLen, w->token.ulMaxPinLen);
		assert_int_equal(g->token.ulMinPinLen, w->token.ulMinPinLen);
		assert_int_equal(g->token.ulTotalPublicMemory, w->token.ulTotalPublicMemory);
		assert_int_equal(g->token.ulFreePublicMemory, w->token.ulFreePublicMemory);
		assert_int_equal(g->token.ulTotalPrivateMemory, w->token.ulTotalPrivateMemory);
		assert_int_equal(g->token.ulFreePrivateMemory, w->token.ulFreePrivateMemory);
		check_version(g->token.hardwareVersion, w->token.hardwareVersion);
		check_version(g->token.firmwareVersion, w->token.firmwareVersion);
		assert_memory_equal(g->token.utcTime, w->token.utcTime, sizeof(w->token.utcTime));
		assert_int_equal(g->nmechs, w->nmechs);
		if (w->nmechs > 0)
			cov->slots_with_mechs++;
		for (j = 0; j < w->nmechs; j++) {
			assert_int_equal(g->mechs[j], w->mechs[j]);
			assert_int_equal(g->infos[j].ulMinKeySize, w->infos[j].ulMinKeySize);
			assert_int_equal(g->infos[j].ulMaxKeySize, w->infos[j].ulMaxKeySize);
			assert_int_equal(g->infos[j].flags, w->infos[j].flags);
		}
	}
}

/* Compares decoded fields with the generated ones, field by field. */
static void
check_fields(const struct sc_fields *want, const struct sc_fields *got, struct coverage *cov)
{
	size_t i;

	assert_int_equal(got->n, want->n);
	for (i = 0; i < want->n; i++) {
		const struct sc_field *w = &want->f[i], *g = &got->f[i];

		assert_int_equal(g->letter, w->letter);
		switch (w->letter) {
		case 'u':
			assert_int_equal(g->ul, w->ul);
			break;
		case 'y':
			assert_int_equal(g->len, w->len);
			if (w->len > 0)
				assert_memory_equal(g->bytes, w->bytes, w->len);
			if (w->len == 0)
				cov->empty_bytes++;
			if (w->len >= 4096)
				cov->big_bytes++;
			break;
		case 'U':
			assert_int_equal(g->n, w->n);
			assert_non_null(g->ulongs);
			if (w->n > 0)
				assert_memory_equal(g->ulongs, w->ulongs, w->n * sizeof(CK_ULONG));
			else
				cov->empty_ulongs++;
			break;
		case 'A':
			check_attrs(w, g, cov);
			break;
		case 'M':
			check_mech(w, g, cov);
			break;
		case 'P':
			check_slots(w, g, cov);
			break;
		default:
			fail_msg("unexpected letter %c", w->letter);
		}
	}
}

/* Round trip of one call with one variant: encode, decode from a copy, compare, end. */
static void
roundtrip_one(uint32_t call, int is_reply, unsigned variant, struct coverage *cov)
{
	const struct p11mux_call_desc *d = p11mux_call_find(call);
	const char *sig = is_reply ? d->reply : d->request;
	struct sc_fields want, got;
	struct p11mux_buf *b, *in;
	struct p11mux_msg m = {0};
	CK_RV rv = (CK_RV)-1;

	assert_int_equal(sc_gen(&want, sig, call, variant), 0);
	b = encode(call, is_reply, CKR_OK, &want);
	in = buf_from(p11mux_buf_data(b), p11mux_buf_len(b));
	assert_int_equal(decode(&m, in, call, is_reply, &rv, &got), 0);
	assert_ptr_equal(m.call, d);
	if (is_reply)
		assert_int_equal(rv, CKR_OK);
	check_fields(&want, &got, cov);
	assert_int_equal(p11mux_buf_remaining(in), 0);
	p11mux_msg_clear(&m);
	p11mux_buf_free(in);
	p11mux_buf_free(b);
	sc_fields_free(&want);
}

/* --- the call table --- */

static void
proto_call_table(void **state)
{
	uint32_t c;
	size_t i;

	(void)state;
	assert_null(p11mux_call_find(0));
	assert_null(p11mux_call_find(P11MUX_CALL_COUNT));
	assert_null(p11mux_call_find(UINT32_MAX));
	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		const struct p11mux_call_desc *d = p11mux_call_find(c);

		assert_ptr_equal(d, &p11mux_calls[c]);
		assert_int_equal(d->code, c);
		assert_non_null(d->name);
		assert_non_null(d->doc);
		assert_non_null(d->request);
		assert_non_null(d->reply);
		assert_true(strlen(d->request) <= SC_MAX_FIELDS);
		assert_true(strlen(d->reply) <= SC_MAX_FIELDS);
		for (i = 0; d->request[i] != '\0'; i++)
			assert_non_null(strchr("uyUAMP", d->request[i]));
		for (i = 0; d->reply[i] != '\0'; i++)
			assert_non_null(strchr("uyUAMP", d->reply[i]));
	}
}

/* --- (a) round trips --- */

static void
proto_roundtrip_requests(void **state)
{
	struct coverage cov = {0};
	unsigned v;
	uint32_t c;
	int k;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++)
		for (v = 0; v < ROUNDTRIP_VARIANTS; v++)
			roundtrip_one(c, 0, v, &cov);
	/* The requests carry attribute templates (FIND) and mechanisms (SIGN, ...): every shape
	 * the generator knows must have travelled. */
	assert_true(cov.ulong_attr > 0);
	assert_true(cov.byte_attr > 0);
	assert_true(cov.refused_attr > 0);
	assert_true(cov.refused_with_buffer > 0);
	assert_true(cov.no_value_attr > 0);
	assert_true(cov.empty_attr_list > 0);
	assert_true(cov.null_status > 0);
	for (k = 0; k < SC_MECH_KINDS; k++)
		assert_true(cov.mech[k] > 0);
	assert_true(cov.empty_bytes > 0);
	assert_true(cov.big_bytes > 0);
}

static void
proto_roundtrip_replies(void **state)
{
	struct coverage cov = {0};
	unsigned v;
	uint32_t c;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++)
		for (v = 0; v < ROUNDTRIP_VARIANTS; v++)
			roundtrip_one(c, 1, v, &cov);
	/* Replies carry attributes with status (GET_OBJECT), slots (GET_SLOTS) and handle
	 * arrays (FIND). */
	assert_true(cov.ulong_attr > 0);
	assert_true(cov.byte_attr > 0);
	assert_true(cov.refused_attr > 0);
	assert_true(cov.empty_attr_list > 0);
	assert_true(cov.slots_with_mechs > 0);
	assert_true(cov.empty_slot_list > 0);
	assert_true(cov.empty_ulongs > 0);
	assert_true(cov.big_bytes > 0);
}

/* A reply with an error CK_RV carries no fields, whatever the call's reply signature. */
static void
proto_reply_error_has_no_fields(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_msg m = {0};
	uint32_t c;
	size_t i;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		for (i = 0; i < sizeof(REPLY_ERRORS) / sizeof(REPLY_ERRORS[0]); i++) {
			struct p11mux_buf *in;
			CK_RV rv = CKR_OK;

			assert_int_equal(p11mux_msg_begin_reply(&m, b, c, REPLY_ERRORS[i]), 0);
			assert_int_equal(p11mux_msg_end(&m), 0);
			/* No field may be added after an error (and trying fails the message). */
			assert_int_equal(p11mux_msg_put_ulong(&m, 1), P11MUX_ERR_INVALID);
			assert_int_equal(p11mux_msg_put_bytes(&m, "x", 1), P11MUX_ERR_INVALID);
			assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
			/* u32 call + u64 rv, nothing else. */
			assert_int_equal(p11mux_buf_len(b), 12);
			in = buf_from(p11mux_buf_data(b), p11mux_buf_len(b));
			assert_int_equal(p11mux_msg_read_reply(&m, in, c, &rv), 0);
			assert_int_equal(rv, REPLY_ERRORS[i]);
			assert_int_equal(p11mux_msg_end(&m), 0);
			p11mux_msg_clear(&m);
			p11mux_buf_free(in);
		}
	}
	p11mux_buf_free(b);
}

/* The wire layout of simple messages, byte by byte: u32 call, CK_ULONG as u64, byte strings with
 * a u32 length, arrays with a u32 count, all big-endian. */
static void
proto_wire_layout(void **state)
{
	static const uint8_t hello[] = {
	        0x00, 0x00, 0x00, 0x01,                         /* HELLO */
	        0x00, 0x00, 0x00, 0x00, 0x50, 0x31, 0x31, 0x58, /* magic */
	        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* lowest version */
	        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* highest */
	};
	static const uint8_t login[] = {
	        0x00, 0x00, 0x00, 0x03,                         /* LOGIN */
	        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* slot */
	        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* CKU_USER */
	        0x00, 0x00, 0x00, 0x04, '1',  '2',  '3',  '4',  /* PIN */
	        0x00, 0x00, 0x00, 0x02, 0xab, 0xcd,             /* ticket */
	};
	static const uint8_t find_reply[] = {
	        0x00, 0x00, 0x00, 0x05,                         /* FIND */
	        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* CKR_OK */
	        0x00, 0x00, 0x00, 0x02,                         /* two handles */
	        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, /* */
	        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	static const uint8_t login_error[] = {
	        0x00, 0x00, 0x00, 0x03,                         /* LOGIN */
	        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, /* CKR_PIN_INCORRECT */
	};
	const CK_ULONG handles[] = {42, (CK_ULONG)1 << 63};
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_msg m = {0};

	(void)state;
	assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_HELLO), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, P11MUX_PROTO_MAGIC), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, 1), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, (CK_ULONG)-1), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	assert_int_equal(p11mux_buf_len(b), sizeof(hello));
	assert_memory_equal(p11mux_buf_data(b), hello, sizeof(hello));

	assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_LOGIN), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, 0x0102030405060708UL), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, CKU_USER), 0);
	assert_int_equal(p11mux_msg_put_bytes(&m, "1234", 4), 0);
	assert_int_equal(p11mux_msg_put_bytes(&m, "\xab\xcd", 2), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	assert_int_equal(p11mux_buf_len(b), sizeof(login));
	assert_memory_equal(p11mux_buf_data(b), login, sizeof(login));

	assert_int_equal(p11mux_msg_begin_reply(&m, b, P11MUX_CALL_FIND, CKR_OK), 0);
	assert_int_equal(p11mux_msg_put_ulongs(&m, handles, 2), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	assert_int_equal(p11mux_buf_len(b), sizeof(find_reply));
	assert_memory_equal(p11mux_buf_data(b), find_reply, sizeof(find_reply));

	assert_int_equal(p11mux_msg_begin_reply(&m, b, P11MUX_CALL_LOGIN, CKR_PIN_INCORRECT), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	assert_int_equal(p11mux_buf_len(b), sizeof(login_error));
	assert_memory_equal(p11mux_buf_data(b), login_error, sizeof(login_error));
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* --- (b) truncation --- */

/* Every proper prefix of a valid message fails to decode (and leaks nothing). */
static void
truncations(int is_reply)
{
	unsigned v, rejected = 0;
	uint32_t c;

	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		const struct p11mux_call_desc *d = p11mux_call_find(c);

		for (v = 0; v < TRUNC_VARIANTS; v++) {
			struct sc_fields want, got;
			struct p11mux_buf *b;
			size_t len, cut;

			assert_int_equal(sc_gen(&want, is_reply ? d->reply : d->request, c, v), 0);
			b = encode(c, is_reply, CKR_OK, &want);
			len = p11mux_buf_len(b);
			for (cut = 0; cut < len; cut++) {
				struct p11mux_buf *in = buf_from(p11mux_buf_data(b), cut);
				struct p11mux_msg m = {0};
				CK_RV rv = CKR_OK;
				int r = decode(&m, in, c, is_reply, &rv, &got);

				if (r == 0)
					fail_msg("%s %s variant %u: prefix of %zu/%zu bytes "
					         "accepted",
					         d->name, is_reply ? "reply" : "request", v, cut,
					         len);
				rejected++;
				p11mux_msg_clear(&m);
				p11mux_buf_free(in);
			}
			p11mux_buf_free(b);
			sc_fields_free(&want);
		}
	}
	/* Sanity: a whole lot of prefixes were tried. */
	assert_true(rejected > (P11MUX_CALL_COUNT - 1) * TRUNC_VARIANTS * 12);
}

static void
proto_truncated_requests(void **state)
{
	(void)state;
	truncations(0);
}

static void
proto_truncated_replies(void **state)
{
	(void)state;
	truncations(1);
}

/* --- (c) trailing bytes --- */

static void
proto_trailing_garbage(void **state)
{
	static const uint8_t junk[] = {0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
	uint32_t c;
	int is_reply;
	size_t extra;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++)
		for (is_reply = 0; is_reply < 2; is_reply++)
			for (extra = 1; extra <= sizeof(junk); extra += 4) {
				const struct p11mux_call_desc *d = p11mux_call_find(c);
				struct sc_fields want, got;
				struct p11mux_buf *b;
				struct p11mux_msg m = {0};
				CK_RV rv;

				assert_int_equal(
				        sc_gen(&want, is_reply ? d->reply : d->request, c, 3), 0);
				b = encode(c, is_reply, CKR_OK, &want);
				assert_int_equal(p11mux_buf_put(b, junk, extra), 0);
				if (is_reply)
					assert_int_equal(p11mux_msg_read_reply(&m, b, c, &rv), 0);
				else
					assert_int_equal(p11mux_msg_read_request(&m, b), 0);
				/* Every field decodes; only the end notices the extra bytes. */
				assert_int_equal(sc_decode(&m, &got), 0);
				check_fields(&want, &got, &(struct coverage){0});
				assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
				p11mux_msg_clear(&m);
				p11mux_buf_free(b);
				sc_fields_free(&want);
			}
}

/* An error reply followed by bytes is malformed too. */
static void
proto_trailing_after_error_reply(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	struct p11mux_msg m = {0};
	CK_RV rv = 0;

	(void)state;
	assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_SIGN), 0);
	assert_int_equal(p11mux_buf_put_u64(b, CKR_KEY_HANDLE_INVALID), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 0), 0);
	assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_SIGN, &rv), 0);
	assert_int_equal(rv, CKR_KEY_HANDLE_INVALID);
	assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* --- (d) signature order --- */

/* Calls the putter of letter with a harmless value. */
static int
put_letter(struct p11mux_msg *m, char letter)
{
	static const CK_ULONG ul = 5;
	static const CK_ATTRIBUTE attr = {CKA_LABEL, (void *)"x", 1};
	static const CK_MECHANISM mech = {CKM_SHA256, NULL, 0};

	switch (letter) {
	case 'u':
		return p11mux_msg_put_ulong(m, 7);
	case 'y':
		return p11mux_msg_put_bytes(m, "ab", 2);
	case 'U':
		return p11mux_msg_put_ulongs(m, &ul, 1);
	case 'A':
		return p11mux_msg_put_attrs(m, &attr, NULL, 1);
	case 'M':
		return p11mux_msg_put_mech(m, &mech);
	default:
		return p11mux_msg_put_slots(m, NULL, 0);
	}
}

/* Calls the getter of letter, discarding the value. */
static int
get_letter(struct p11mux_msg *m, char letter)
{
	struct p11mux_attrs a;
	struct p11mux_slot *s;
	CK_MECHANISM *mech;
	const uint8_t *p;
	CK_ULONG ul, *ulv;
	size_t n;

	switch (letter) {
	case 'u':
		return p11mux_msg_get_ulong(m, &ul);
	case 'y':
		return p11mux_msg_get_bytes(m, &p, &n);
	case 'U':
		return p11mux_msg_get_ulongs(m, &ulv, &n);
	case 'A':
		return p11mux_msg_get_attrs(m, &a);
	case 'M':
		return p11mux_msg_get_mech(m, &mech);
	default:
		return p11mux_msg_get_slots(m, &s, &n);
	}
}

/* Opens a message of call c for writing into enc, and one for reading a fresh copy of the
 * clean encoding `full` (into *in, replacing the last one), and moves both past the first pos
 * fields of want. */
static void
open_at(struct p11mux_msg *m, struct p11mux_msg *r, struct p11mux_buf *enc,
        const struct p11mux_buf *full, struct p11mux_buf **in, uint32_t c, int is_reply,
        const struct sc_fields *want, size_t pos)
{
	const struct p11mux_call_desc *d = p11mux_call_find(c);
	const char *sig = is_reply ? d->reply : d->request;
	struct sc_fields one = {0};
	size_t k;
	CK_RV rv;

	p11mux_msg_clear(r);
	p11mux_buf_free(*in);
	*in = buf_from(p11mux_buf_data(full), p11mux_buf_len(full));
	if (is_reply) {
		assert_int_equal(p11mux_msg_begin_reply(m, enc, c, CKR_OK), 0);
		assert_int_equal(p11mux_msg_read_reply(r, *in, c, &rv), 0);
	} else {
		assert_int_equal(p11mux_msg_begin_request(m, enc, c), 0);
		assert_int_equal(p11mux_msg_read_request(r, *in), 0);
	}
	for (k = 0; k < pos; k++) {
		one.f[0] = want->f[k];
		one.n = 1;
		assert_int_equal(sc_encode(m, &one), 0);
		assert_int_equal(get_letter(r, sig[k]), 0);
	}
}

/* At every position of every signature, each wrong putter and getter is refused with
 * P11MUX_ERR_INVALID and writes or consumes nothing; so is any field past the end. The
 * refusal is sticky: the message stays failed, the right field is refused after it too, and
 * the end reports it. */
static void
proto_wrong_letter_refused(void **state)
{
	static const char letters[] = "uyUAMP";
	uint32_t c;
	int is_reply;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++)
		for (is_reply = 0; is_reply < 2; is_reply++) {
			const struct p11mux_call_desc *d = p11mux_call_find(c);
			const char *sig = is_reply ? d->reply : d->request;
			struct sc_fields want;
			struct p11mux_buf *enc = p11mux_buf_new(P11MUX_FRAME_MAX), *full,
			                  *in = NULL;
			struct p11mux_msg m = {0}, r = {0};
			size_t pos, k, len, rem;

			assert_int_equal(sc_gen(&want, sig, c, 1), 0);
			full = encode(c, is_reply, CKR_OK, &want);
			for (pos = 0; pos <= strlen(sig); pos++)
				for (k = 0; k < 6; k++) {
					if (letters[k] == sig[pos])
						continue;
					open_at(&m, &r, enc, full, &in, c, is_reply, &want, pos);
					len = p11mux_buf_len(enc);
					rem = p11mux_buf_remaining(in);
					assert_int_equal(put_letter(&m, letters[k]),
					                 P11MUX_ERR_INVALID);
					assert_int_equal(p11mux_buf_len(enc), len);
					assert_int_equal(get_letter(&r, letters[k]),
					                 P11MUX_ERR_INVALID);
					assert_int_equal(p11mux_buf_remaining(in), rem);
					if (sig[pos] != '\0') {
						assert_int_equal(put_letter(&m, sig[pos]),
						                 P11MUX_ERR_INVALID);
						assert_int_equal(get_letter(&r, sig[pos]),
						                 P11MUX_ERR_INVALID);
						assert_int_equal(p11mux_buf_len(enc), len);
					}
					assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
					assert_int_equal(p11mux_msg_end(&r), P11MUX_ERR_INVALID);
				}
			/* Without refusals, the same fields end cleanly. */
			open_at(&m, &r, enc, full, &in, c, is_reply, &want, strlen(sig));
			assert_int_equal(p11mux_msg_end(&m), 0);
			assert_int_equal(p11mux_msg_end(&r), 0);
			assert_int_equal(p11mux_buf_len(enc), p11mux_buf_len(full));
			assert_memory_equal(p11mux_buf_data(enc), p11mux_buf_data(full),
			                    p11mux_buf_len(full));
			p11mux_msg_clear(&m);
			p11mux_msg_clear(&r);
			p11mux_buf_free(enc);
			p11mux_buf_free(full);
			p11mux_buf_free(in);
			sc_fields_free(&want);
		}
}

/* The brief's example: a byte string where LOGIN's signature says u. */
static void
proto_put_bytes_where_u_expected(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(256);
	struct p11mux_msg m = {0};

	(void)state;
	assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_LOGIN), 0);
	assert_int_equal(p11mux_msg_put_bytes(&m, "1234", 4), P11MUX_ERR_INVALID);
	assert_int_equal(p11mux_buf_len(b), 4);
	assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
	p11mux_msg_clear(&m);
	/* A cleared message has no signature: every put is refused. */
	assert_int_equal(p11mux_msg_put_ulong(&m, 1), P11MUX_ERR_INVALID);
	p11mux_buf_free(b);
}

/* --- (e) mechanism parameters --- */

/* On the wire, a raw parameter of another length than its mechanism's is refused by the
 * decoder: a client that skips the shim cannot hand a module a short IV. */
static void
proto_mech_raw_length_decoded(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(256);
	struct p11mux_msg m = {0};
	CK_MECHANISM *mech = NULL;
	CK_ULONG slot;
	size_t len;

	(void)state;
	for (len = 0; len <= 17; len++) {
		p11mux_buf_reset(b);
		assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_SIGN), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 0), 0);
		assert_int_equal(p11mux_buf_put_u64(b, CKM_AES_CBC), 0);
		assert_int_equal(p11mux_buf_put_u8(b, 1), 0); /* a raw parameter */
		assert_int_equal(p11mux_buf_put_bytes(b, "0123456789abcdefg", len), 0);
		assert_int_equal(p11mux_msg_read_request(&m, b), 0);
		assert_int_equal(p11mux_msg_get_ulong(&m, &slot), 0);
		assert_int_equal(p11mux_msg_get_mech(&m, &mech),
		                 len == 16 ? 0 : P11MUX_ERR_INVALID);
		p11mux_msg_clear(&m);
	}
	p11mux_buf_free(b);
}

static void
proto_mech_param_unknown_refused(void **state)
{
	CK_BYTE iv[12] = {0}, aad[4] = {0}, pub[65] = {4}, iv16[16] = {0};
	CK_AES_CTR_PARAMS ctr = {128, {0}};
	CK_GCM_PARAMS gcm = {iv, sizeof(iv), sizeof(iv) * 8, aad, sizeof(aad), 128};
	CK_ECDH1_DERIVE_PARAMS ecdh = {CKD_NULL, 0, NULL, sizeof(pub), pub};
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
	const CK_MECHANISM bad[] = {
	        {CKM_AES_GCM, &gcm, sizeof(gcm)},
	        {CKM_ECDH1_DERIVE, &ecdh, sizeof(ecdh)},
	        /* Known mechanisms with a parameter of the wrong size. */
	        {CKM_RSA_PKCS_PSS, &pss, sizeof(pss) - 8},
	        {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss) + 1},
	        {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep) - 1},
	        /* A parameter for a mechanism that takes none known to the codec. */
	        {CKM_SHA256_RSA_PKCS, iv, sizeof(iv)},
	        /* A length without a pointer. */
	        {CKM_AES_CBC, NULL, 16},
	        /* Raw parameters of another length than the mechanism's (a module would read
	         * 16 bytes of IV, or a whole CK_AES_CTR_PARAMS, from a shorter buffer). */
	        {CKM_AES_CBC, iv, 3},
	        {CKM_AES_CBC_PAD, aad, sizeof(aad)},
	        {CKM_DES3_CBC, iv, sizeof(iv)},
	        {CKM_AES_CTR, iv, sizeof(iv)},
	};
	const CK_MECHANISM good[] = {
	        {CKM_AES_GCM, NULL, 0},
	        {CKM_RSA_PKCS_PSS, &pss, sizeof(pss)},
	        {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)},
	        {CKM_AES_CBC_PAD, iv16, sizeof(iv16)},
	        {CKM_DES3_CBC, iv16, 8},
	        {CKM_AES_CTR, &ctr, sizeof(ctr)},
	        {CKM_ECDSA, NULL, 0},
	};
	struct p11mux_buf *b = p11mux_buf_new(4096);
	struct p11mux_msg m = {0};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(p11mux_mech_param_ok(&bad[i]), CKR_MECHANISM_PARAM_INVALID);
		assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_SIGN), 0);
		assert_int_equal(p11mux_msg_put_ulong(&m, 0), 0);
		assert_int_equal(p11mux_msg_put_mech(&m, &bad[i]), P11MUX_ERR_INVALID);
		/* Refused before anything was written: not dropped, not half-sent. */
		assert_int_equal(p11mux_buf_len(b), 12);
		assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
	}
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(p11mux_mech_param_ok(&good[i]), CKR_OK);
		assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_SIGN), 0);
		assert_int_equal(p11mux_msg_put_ulong(&m, 0), 0);
		assert_int_equal(p11mux_msg_put_mech(&m, &good[i]), 0);
	}
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* A DIGEST request (u M y) with a hand-made mechanism: type, kind byte, then raw bytes. */
static struct p11mux_buf *
digest_with_mech(CK_MECHANISM_TYPE type, uint8_t kind, const void *param, size_t len)
{
	struct p11mux_buf *b = p11mux_buf_new(4096);

	assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_DIGEST), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 0), 0);
	assert_int_equal(p11mux_buf_put_u64(b, type), 0);
	assert_int_equal(p11mux_buf_put_u8(b, kind), 0);
	assert_int_equal(p11mux_buf_put(b, param, len), 0);
	assert_int_equal(p11mux_buf_put_bytes(b, "data", 4), 0);
	return b;
}

/* The decoder refuses a parameter encoding that does not belong to the mechanism. */
static void
proto_mech_decode_kind_mismatch(void **state)
{
	static const uint8_t raw16[] = {0, 0, 0, 16, 1,  2,  3,  4,  5,  6,
	                                7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	static const uint8_t pss[24] = {0, 0, 0, 0, 0, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 2};
	static const uint8_t oaep[28] = {0};
	const struct {
		CK_MECHANISM_TYPE type;
		uint8_t kind;
		const uint8_t *p;
		size_t len;
	} cases[] = {
	        {CKM_AES_GCM, 1, raw16, sizeof(raw16)},      /* raw for a pointer struct */
	        {CKM_ECDH1_DERIVE, 1, raw16, sizeof(raw16)}, /* same */
	        {CKM_RSA_PKCS, 2, pss, sizeof(pss)},         /* PSS for a non-PSS mechanism */
	        {CKM_RSA_PKCS_PSS, 3, oaep, sizeof(oaep)},   /* OAEP for PSS */
	        {CKM_RSA_PKCS_OAEP, 2, pss, sizeof(pss)},    /* PSS for OAEP */
	        {CKM_AES_CBC, 4, raw16, sizeof(raw16)},      /* unknown kind */
	        {CKM_AES_CBC, 0xff, raw16, sizeof(raw16)},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct p11mux_buf *b =
		        digest_with_mech(cases[i].type, cases[i].kind, cases[i].p, cases[i].len);
		struct p11mux_msg m = {0};
		CK_MECHANISM *mech = NULL;
		CK_ULONG slot;

		assert_int_equal(p11mux_msg_read_request(&m, b), 0);
		assert_int_equal(p11mux_msg_get_ulong(&m, &slot), 0);
		assert_int_equal(p11mux_msg_get_mech(&m, &mech), P11MUX_ERR_INVALID);
		assert_null(mech);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);
	}
	/* Control: the same raw bytes are accepted for CKM_AES_CBC. */
	{
		struct p11mux_buf *b = digest_with_mech(CKM_AES_CBC, 1, raw16, sizeof(raw16));
		struct p11mux_msg m = {0};
		CK_MECHANISM *mech = NULL;
		const uint8_t *p;
		CK_ULONG slot;
		size_t n;

		assert_int_equal(p11mux_msg_read_request(&m, b), 0);
		assert_int_equal(p11mux_msg_get_ulong(&m, &slot), 0);
		assert_int_equal(p11mux_msg_get_mech(&m, &mech), 0);
		assert_int_equal(mech->mechanism, CKM_AES_CBC);
		assert_int_equal(mech->ulParameterLen, 16);
		assert_memory_equal(mech->pParameter, raw16 + 4, 16);
		assert_int_equal(p11mux_msg_get_bytes(&m, &p, &n), 0);
		assert_int_equal(p11mux_msg_end(&m), 0);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);
	}
}

/* --- (f) counts larger than the data --- */

/* A reply header for call with CKR_OK. */
static struct p11mux_buf *
reply_header(uint32_t call)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);

	assert_int_equal(p11mux_buf_put_u32(b, call), 0);
	assert_int_equal(p11mux_buf_put_u64(b, CKR_OK), 0);
	return b;
}

static void
proto_count_exceeds_data(void **state)
{
	static const uint32_t counts[] = {0xffffffffu, 0x80000000u, 0x10000000u, 3};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct p11mux_msg m = {0};
		struct p11mux_attrs a = {0};
		struct p11mux_slot *s = NULL;
		CK_ULONG *v = NULL, slot;
		struct p11mux_buf *b;
		size_t n = 77;
		CK_RV rv;

		/* 'U' (FIND reply): two u64 follow, fewer than the count. */
		b = reply_header(P11MUX_CALL_FIND);
		assert_int_equal(p11mux_buf_put_u32(b, counts[i]), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 1), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 2), 0);
		assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_FIND, &rv), 0);
		assert_int_equal(p11mux_msg_get_ulongs(&m, &v, &n), P11MUX_ERR_SHORT);
		/* Refused before the arena allocated anything. */
		assert_null(m.arena);
		assert_null(v);
		assert_int_equal(n, 77);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);

		/* 'A' (FIND request): one attribute's worth of bytes. */
		b = p11mux_buf_new(P11MUX_FRAME_MAX);
		assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_FIND), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 0), 0);
		assert_int_equal(p11mux_buf_put_u32(b, counts[i]), 0);
		assert_int_equal(p11mux_buf_put_u64(b, CKA_LABEL), 0);
		assert_int_equal(p11mux_buf_put_u64(b, CKR_OK), 0);
		assert_int_equal(p11mux_buf_put_u8(b, 0), 0);
		assert_int_equal(p11mux_msg_read_request(&m, b), 0);
		assert_int_equal(p11mux_msg_get_ulong(&m, &slot), 0);
		assert_int_equal(p11mux_msg_get_attrs(&m, &a), P11MUX_ERR_SHORT);
		assert_null(m.arena);
		assert_null(a.attrs);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);

		/* 'P' (GET_SLOTS reply): a few hundred bytes, not enough for the count. */
		b = reply_header(P11MUX_CALL_GET_SLOTS);
		assert_int_equal(p11mux_buf_put_u32(b, counts[i]), 0);
		{
			uint8_t *p;

			assert_int_equal(p11mux_buf_reserve(b, 400, &p), 0);
			memset(p, 0, 400);
		}
		assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_GET_SLOTS, &rv), 0);
		n = 77;
		assert_int_equal(p11mux_msg_get_slots(&m, &s, &n), P11MUX_ERR_SHORT);
		assert_null(m.arena);
		assert_null(s);
		assert_int_equal(n, 77);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);
	}
}

/* A slot whose mechanism count exceeds what follows. */
static void
proto_slot_mech_count_exceeds_data(void **state)
{
	struct p11mux_buf *b = reply_header(P11MUX_CALL_GET_SLOTS);
	struct p11mux_msg m = {0};
	struct p11mux_slot *s = NULL;
	uint8_t *p;
	size_t n = 0;
	CK_RV rv;

	(void)state;
	assert_int_equal(p11mux_buf_put_u32(b, 1), 0);
	/* One slot descriptor without its mechanism count: 324 - 4 bytes. */
	assert_int_equal(p11mux_buf_reserve(b, 320, &p), 0);
	memset(p, 0, 320);
	assert_int_equal(p11mux_buf_put_u32(b, 0xffffffffu), 0);
	assert_int_equal(p11mux_buf_reserve(b, 64, &p), 0); /* two mechanisms' worth */
	memset(p, 0, 64);
	assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_GET_SLOTS, &rv), 0);
	assert_int_equal(p11mux_msg_get_slots(&m, &s, &n), P11MUX_ERR_SHORT);
	assert_null(s);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* Errors are sticky: a mechanism the codec cannot carry fails its put, every put after it
 * fails the same way and writes nothing, and the end says so; a caller that puts everything
 * and checks once never sends a frame without its mechanism (p11-kit's buffer and OpenSSH's
 * sshbuf work the same way). */
static void
proto_sticky_put(void **state)
{
	CK_MECHANISM bad = {CKM_RSA_PKCS, "xx", 2}; /* a parameter CKM_RSA_PKCS cannot have */
	struct p11mux_msg m = {0};
	struct p11mux_buf *b = p11mux_buf_new(1024);
	size_t len;

	(void)state;
	assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_SIGN), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, 0), 0);
	assert_int_equal(p11mux_msg_put_mech(&m, &bad), P11MUX_ERR_INVALID);
	len = p11mux_buf_len(b);
	/* The rest of the request, put without looking: each put fails, nothing is written. */
	assert_int_equal(p11mux_msg_put_ulong(&m, 7), P11MUX_ERR_INVALID);
	assert_int_equal(p11mux_msg_put_bytes(&m, "data", 4), P11MUX_ERR_INVALID);
	assert_int_equal(p11mux_buf_len(b), len);
	assert_int_equal(p11mux_msg_error(&m), P11MUX_ERR_INVALID);
	assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_INVALID);
	/* A new message starts clean. */
	assert_int_equal(p11mux_msg_begin_request(&m, b, P11MUX_CALL_LOGOUT), 0);
	assert_int_equal(p11mux_msg_put_ulong(&m, 0), 0);
	assert_int_equal(p11mux_msg_end(&m), 0);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* The same on the reading side: after a failed get, later gets fail without reading and
 * leave their outputs alone, and the end reports the first error. */
static void
proto_sticky_get(void **state)
{
	struct p11mux_msg m = {0};
	struct p11mux_buf *b = p11mux_buf_new(256);
	const uint8_t *pin = NULL;
	size_t pinlen = 0;
	CK_ULONG slot = 0, user = 99;

	(void)state;
	/* LOGIN whose PIN claims more bytes than follow. */
	assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_LOGIN), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 3), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 100), 0);
	assert_int_equal(p11mux_msg_read_request(&m, b), 0);
	p11mux_msg_get_ulong(&m, &slot);
	p11mux_msg_get_ulong(&m, &user); /* the PIN's length is not a u64: too short */
	p11mux_msg_get_bytes(&m, &pin, &pinlen);
	assert_int_equal(slot, 3);
	assert_int_equal(user, 99);
	assert_null(pin);
	assert_int_equal(p11mux_msg_end(&m), P11MUX_ERR_SHORT);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* A byte string whose length exceeds the data; and counts that fit exactly. */
static void
proto_count_boundaries(void **state)
{
	struct p11mux_msg m = {0};
	struct p11mux_buf *b;
	const uint8_t *p = NULL;
	CK_ULONG *v = NULL, ul;
	size_t n = 0;
	CK_RV rv;

	(void)state;
	/* LOGIN with a PIN that claims 4 GiB. */
	b = p11mux_buf_new(256);
	assert_int_equal(p11mux_buf_put_u32(b, P11MUX_CALL_LOGIN), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 0), 0);
	assert_int_equal(p11mux_buf_put_u64(b, CKU_USER), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 0xffffffffu), 0);
	assert_int_equal(p11mux_buf_put(b, "1234", 4), 0);
	assert_int_equal(p11mux_msg_read_request(&m, b), 0);
	assert_int_equal(p11mux_msg_get_ulong(&m, &ul), 0);
	assert_int_equal(p11mux_msg_get_ulong(&m, &ul), 0);
	assert_int_equal(p11mux_msg_get_bytes(&m, &p, &n), P11MUX_ERR_SHORT);
	assert_null(p);
	assert_int_not_equal(p11mux_msg_end(&m), 0);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);

	/* 'U' count 2 with exactly 16 bytes: fine; with 15: refused. */
	b = reply_header(P11MUX_CALL_FIND);
	assert_int_equal(p11mux_buf_put_u32(b, 2), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 11), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 22), 0);
	assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_FIND, &rv), 0);
	assert_int_equal(p11mux_msg_get_ulongs(&m, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0], 11);
	assert_int_equal(v[1], 22);
	assert_int_equal(p11mux_msg_end(&m), 0);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);

	b = reply_header(P11MUX_CALL_FIND);
	assert_int_equal(p11mux_buf_put_u32(b, 2), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 11), 0);
	assert_int_equal(p11mux_buf_put(b, "\0\0\0\0\0\0\0", 7), 0);
	assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_FIND, &rv), 0);
	v = NULL;
	assert_int_equal(p11mux_msg_get_ulongs(&m, &v, &n), P11MUX_ERR_SHORT);
	assert_null(v);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* An attribute that carries a value although its status is an error is refused, as is an
 * unknown value encoding. */
static void
proto_attr_malformed(void **state)
{
	static const uint8_t kinds[] = {1, 2, 3, 0xff};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(kinds); i++) {
		struct p11mux_buf *b = reply_header(P11MUX_CALL_GET_OBJECT);
		struct p11mux_msg m = {0};
		struct p11mux_attrs a = {0};
		CK_RV rv;

		assert_int_equal(p11mux_buf_put_u32(b, 1), 0);
		assert_int_equal(p11mux_buf_put_u64(b, CKA_VALUE), 0);
		/* kinds 1 and 2 carry a value: refused with a non-OK status. */
		assert_int_equal(
		        p11mux_buf_put_u64(b, kinds[i] <= 2 ? CKR_ATTRIBUTE_SENSITIVE : CKR_OK), 0);
		assert_int_equal(p11mux_buf_put_u8(b, kinds[i]), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 8), 0);
		assert_int_equal(p11mux_msg_read_reply(&m, b, P11MUX_CALL_GET_OBJECT, &rv), 0);
		assert_int_equal(p11mux_msg_get_attrs(&m, &a), P11MUX_ERR_INVALID);
		assert_null(a.attrs);
		p11mux_msg_clear(&m);
		p11mux_buf_free(b);
	}
}

/* --- (g) call codes --- */

static void
proto_unknown_call_refused(void **state)
{
	static const uint32_t codes[] = {0, P11MUX_CALL_COUNT, P11MUX_CALL_COUNT + 1, 0x80000000u,
	                                 UINT32_MAX};
	struct p11mux_buf *b = p11mux_buf_new(64);
	struct p11mux_msg m = {0};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		p11mux_buf_reset(b);
		assert_int_equal(p11mux_buf_put_u32(b, codes[i]), 0);
		assert_int_equal(p11mux_buf_put_u64(b, 0), 0);
		assert_int_equal(p11mux_msg_read_request(&m, b), P11MUX_ERR_INVALID);
		assert_null(m.call);
		/* Nothing can be read from a refused message. */
		assert_int_equal(get_letter(&m, 'u'), P11MUX_ERR_INVALID);
		assert_int_equal(p11mux_msg_begin_request(&m, b, codes[i]), P11MUX_ERR_INVALID);
		assert_int_equal(p11mux_msg_begin_reply(&m, b, codes[i], CKR_OK),
		                 P11MUX_ERR_INVALID);
		assert_int_equal(put_letter(&m, 'u'), P11MUX_ERR_INVALID);
		assert_int_not_equal(p11mux_msg_end(&m), 0);
	}
	/* Fewer than four bytes: no call code at all. */
	p11mux_buf_reset(b);
	assert_int_equal(p11mux_buf_put(b, "\0\0\1", 3), 0);
	assert_int_equal(p11mux_msg_read_request(&m, b), P11MUX_ERR_SHORT);
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

static void
proto_reply_to_other_call_refused(void **state)
{
	struct sc_fields want;
	struct p11mux_msg m = {0};
	struct p11mux_buf *b, *in;
	uint32_t c, other;
	CK_RV rv;

	(void)state;
	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		assert_int_equal(sc_gen(&want, p11mux_calls[c].reply, c, 2), 0);
		b = encode(c, 1, CKR_OK, &want);
		for (other = 0; other <= P11MUX_CALL_COUNT; other++) {
			if (other == c)
				continue;
			in = buf_from(p11mux_buf_data(b), p11mux_buf_len(b));
			rv = 0x1234;
			assert_int_equal(p11mux_msg_read_reply(&m, in, other, &rv),
			                 P11MUX_ERR_INVALID);
			assert_int_equal(rv, 0x1234);
			assert_int_equal(get_letter(&m, p11mux_calls[c].reply[0]),
			                 P11MUX_ERR_INVALID);
			p11mux_msg_clear(&m);
			p11mux_buf_free(in);
		}
		p11mux_buf_free(b);
		sc_fields_free(&want);
	}
	/* An error reply to another call is refused too. */
	b = p11mux_buf_new(64);
	assert_int_equal(p11mux_msg_begin_reply(&m, b, P11MUX_CALL_LOGIN, CKR_PIN_INCORRECT), 0);
	in = buf_from(p11mux_buf_data(b), p11mux_buf_len(b));
	assert_int_equal(p11mux_msg_read_reply(&m, in, P11MUX_CALL_LOGOUT, &rv),
	                 P11MUX_ERR_INVALID);
	p11mux_msg_clear(&m);
	p11mux_buf_free(in);
	/* A reply header cut short. */
	in = buf_from(p11mux_buf_data(b), 11);
	assert_int_equal(p11mux_msg_read_reply(&m, in, P11MUX_CALL_LOGIN, &rv), P11MUX_ERR_SHORT);
	p11mux_msg_clear(&m);
	p11mux_buf_free(in);
	p11mux_buf_free(b);
}

/* --- attribute types and error strings --- */

static void
proto_attr_is_ulong(void **state)
{
	static const CK_ATTRIBUTE_TYPE ulongs[] = {
	        CKA_CLASS,        CKA_KEY_TYPE,  CKA_CERTIFICATE_TYPE,
	        CKA_MODULUS_BITS, CKA_VALUE_LEN, CKA_KEY_GEN_MECHANISM};
	static const CK_ATTRIBUTE_TYPE others[] = {
	        CKA_LABEL,   CKA_ID,        CKA_VALUE, CKA_SIGN,
	        CKA_MODULUS, CKA_EC_PARAMS, CKA_TOKEN, CKA_VENDOR_DEFINED};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ulongs) / sizeof(ulongs[0]); i++)
		assert_true(p11mux_attr_is_ulong(ulongs[i]));
	for (i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		assert_false(p11mux_attr_is_ulong(others[i]));
}

static void
proto_strerror(void **state)
{
	static const int codes[] = {P11MUX_OK,         P11MUX_ERR_NOMEM,   P11MUX_ERR_TOO_BIG,
	                            P11MUX_ERR_SHORT,  P11MUX_ERR_INVALID, P11MUX_ERR_IO,
	                            P11MUX_ERR_CLOSED, P11MUX_ERR_VERSION};
	const char *unknown = p11mux_strerror(-1000);
	size_t i, j;

	(void)state;
	assert_string_equal(unknown, "unknown error");
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		assert_string_not_equal(p11mux_strerror(codes[i]), unknown);
		for (j = 0; j < i; j++)
			assert_string_not_equal(p11mux_strerror(codes[i]),
			                        p11mux_strerror(codes[j]));
	}
}

/* --- (h) frames --- */

struct sender {
	int fd;
	const struct p11mux_buf *b;
	int count; /* frames to send */
	int r;
};

static void *
send_thread(void *arg)
{
	struct sender *s = arg;
	int i;

	for (i = 0; i < s->count && s->r == 0; i++)
		s->r = p11mux_frame_send(s->fd, s->b);
	return NULL;
}

static void
socket_pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* Writes all of p[0..n) to fd. */
static void
write_all(int fd, const void *p, size_t n)
{
	const uint8_t *q = p;

	while (n > 0) {
		ssize_t k = write(fd, q, n);

		assert_true(k > 0);
		q += k;
		n -= (size_t)k;
	}
}

static void
frame_roundtrip(void **state)
{
	static const size_t sizes[] = {1, 4, 1000, 70000, 300000, P11MUX_FRAME_MAX};
	struct p11mux_buf *out = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct sc_rng rng = {7};
	size_t i;
	int sv[2];

	(void)state;
	socket_pair(sv);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct sender s = {sv[0], out, 3, 0};
		pthread_t t;
		uint8_t *p;
		int k;

		p11mux_buf_reset(out);
		assert_int_equal(p11mux_buf_reserve(out, sizes[i], &p), 0);
		sc_fill(&rng, p, sizes[i]);
		/* Three frames back to back: the boundaries must come out right. */
		assert_int_equal(pthread_create(&t, NULL, send_thread, &s), 0);
		for (k = 0; k < 3; k++) {
			assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), 0);
			assert_int_equal(p11mux_buf_len(in), sizes[i]);
			assert_int_equal(p11mux_buf_remaining(in), sizes[i]);
			assert_memory_equal(p11mux_buf_data(in), p11mux_buf_data(out), sizes[i]);
		}
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(s.r, 0);
	}
	/* An empty frame, into a buffer that already holds memory. */
	p11mux_buf_reset(out);
	assert_int_equal(p11mux_frame_send(sv[0], out), 0);
	assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), 0);
	assert_int_equal(p11mux_buf_len(in), 0);
	close(sv[0]);
	close(sv[1]);
	p11mux_buf_free(out);
	p11mux_buf_free(in);
}

/* The frame on the wire: u32 big-endian length, then the payload. */
static void
frame_wire_layout(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	uint8_t got[16];
	int sv[2];

	(void)state;
	socket_pair(sv);
	assert_int_equal(p11mux_buf_put(b, "hello", 5), 0);
	assert_int_equal(p11mux_frame_send(sv[0], b), 0);
	close(sv[0]);
	assert_int_equal(read(sv[1], got, sizeof(got)), 9);
	assert_memory_equal(got, "\x00\x00\x00\x05hello", 9);
	close(sv[1]);
	p11mux_buf_free(b);
}

static void
frame_header_over_cap(void **state)
{
	static const uint8_t hdrs[][4] = {
	        {0x00, 0x10, 0x00, 0x01}, /* P11MUX_FRAME_MAX + 1 */
	        {0x7f, 0xff, 0xff, 0xff},
	        {0xff, 0xff, 0xff, 0xff},
	};
	size_t i;

	(void)state;
	assert_int_equal(P11MUX_FRAME_MAX + 1, 0x00100001u);
	for (i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
		struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
		int sv[2];

		socket_pair(sv);
		assert_int_equal(p11mux_buf_put(in, "old", 3), 0);
		write_all(sv[0], hdrs[i], 4);
		/* The payload is never read: no byte of it was sent, yet recv returns at once. */
		assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX),
		                 P11MUX_ERR_TOO_BIG);
		/* A header arrived, so the buffer was reset; nothing was set aside for it. */
		assert_int_equal(p11mux_buf_len(in), 0);
		close(sv[0]);
		close(sv[1]);
		p11mux_buf_free(in);
	}
}

/* The limit given to recv is enforced, and so is the receiving buffer's own cap; a frame of
 * exactly the limit is fine. */
static void
frame_caps(void **state)
{
	struct p11mux_buf *out = p11mux_buf_new(1024), *in = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_buf *small = p11mux_buf_new(100);
	uint8_t *p;
	int sv[2];

	(void)state;
	assert_int_equal(p11mux_buf_reserve(out, 200, &p), 0);
	memset(p, 0xab, 200);

	socket_pair(sv);
	assert_int_equal(p11mux_frame_send(sv[0], out), 0);
	assert_int_equal(p11mux_frame_recv(sv[1], in, 199), P11MUX_ERR_TOO_BIG);
	close(sv[0]);
	close(sv[1]);

	socket_pair(sv);
	assert_int_equal(p11mux_frame_send(sv[0], out), 0);
	assert_int_equal(p11mux_frame_recv(sv[1], small, P11MUX_FRAME_MAX), P11MUX_ERR_TOO_BIG);
	close(sv[0]);
	close(sv[1]);

	socket_pair(sv);
	assert_int_equal(p11mux_frame_send(sv[0], out), 0);
	assert_int_equal(p11mux_frame_recv(sv[1], in, 200), 0);
	assert_int_equal(p11mux_buf_len(in), 200);
	assert_memory_equal(p11mux_buf_data(in), p11mux_buf_data(out), 200);
	close(sv[0]);
	close(sv[1]);
	p11mux_buf_free(out);
	p11mux_buf_free(in);
	p11mux_buf_free(small);
}

/* The peer closes before a whole header: CLOSED, and the buffer keeps its request (so that the
 * caller can resend it on a new connection). */
static void
frame_closed_before_header(void **state)
{
	size_t partial;

	(void)state;
	for (partial = 0; partial < 4; partial++) {
		struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
		const uint8_t *q;
		int sv[2];

		socket_pair(sv);
		assert_int_equal(p11mux_buf_put(in, "request", 7), 0);
		assert_int_equal(p11mux_buf_get(in, 2, &q), 0);
		write_all(sv[0], "\x00\x00\x00", partial);
		close(sv[0]);
		assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), P11MUX_ERR_CLOSED);
		assert_int_equal(p11mux_buf_len(in), 7);
		assert_int_equal(p11mux_buf_remaining(in), 5);
		assert_int_equal(p11mux_buf_error(in), 0);
		assert_memory_equal(p11mux_buf_data(in), "request", 7);
		close(sv[1]);
		p11mux_buf_free(in);
	}
}

/* The peer closes inside the payload: SHORT, not CLOSED (the request may have been acted on). */
static void
frame_closed_mid_payload(void **state)
{
	static const size_t sent[] = {0, 1, 99};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(sent) / sizeof(sent[0]); i++) {
		struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
		uint8_t payload[100] = {0};
		int sv[2];

		socket_pair(sv);
		write_all(sv[0], "\x00\x00\x00\x64", 4);
		write_all(sv[0], payload, sent[i]);
		close(sv[0]);
		assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), P11MUX_ERR_SHORT);
		close(sv[1]);
		p11mux_buf_free(in);
	}
}

/* With a deadline, a peer that stops sending (before the header, inside it, or inside the
 * payload) is a time-out at the deadline, not a wait for ever; a whole frame in time is read. */
static void
frame_recv_until_deadline(void **state)
{
	static const size_t sent[] = {0, 2, 4, 50};
	uint8_t wire[104] = {0x00, 0x00, 0x00, 0x64};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(sent) / sizeof(sent[0]); i++) {
		struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
		uint64_t start = p11mux_now_ns(), took;
		int sv[2];

		socket_pair(sv);
		write_all(sv[0], wire, sent[i]);
		assert_int_equal(p11mux_frame_recv_until(sv[1], in, P11MUX_FRAME_MAX,
		                                         start + 50 * 1000000ull),
		                 P11MUX_ERR_TIMEOUT);
		took = p11mux_now_ns() - start;
		assert_true(took >= 50 * 1000000ull);
		assert_true(took < 5000 * 1000000ull);
		/* A whole frame before the deadline is read. */
		close(sv[0]);
		close(sv[1]);
		socket_pair(sv);
		write_all(sv[0], wire, sizeof(wire));
		assert_int_equal(p11mux_frame_recv_until(sv[1], in, P11MUX_FRAME_MAX,
		                                         p11mux_now_ns() + 5000 * 1000000ull),
		                 0);
		assert_int_equal(p11mux_buf_len(in), 100);
		close(sv[0]);
		close(sv[1]);
		p11mux_buf_free(in);
	}
}

/* A frame that is all there is read even when the reader looks after its deadline (a thread
 * that ran late must not take a peer that answered in time for a hung one); a frame only
 * partly there is then a time-out at once. */
static void
frame_recv_late_reader(void **state)
{
	uint8_t wire[104] = {0x00, 0x00, 0x00, 0x64};
	struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
	uint64_t start;
	int sv[2];

	(void)state;
	socket_pair(sv);
	write_all(sv[0], wire, sizeof(wire));
	assert_int_equal(p11mux_frame_recv_until(sv[1], in, P11MUX_FRAME_MAX, p11mux_now_ns() - 1),
	                 0);
	assert_int_equal(p11mux_buf_len(in), 100);
	write_all(sv[0], wire, 50);
	start = p11mux_now_ns();
	assert_int_equal(p11mux_frame_recv_until(sv[1], in, P11MUX_FRAME_MAX, start - 1),
	                 P11MUX_ERR_TIMEOUT);
	assert_true(p11mux_now_ns() - start < 1000 * 1000000ull);
	close(sv[0]);
	close(sv[1]);
	p11mux_buf_free(in);
}

/* With a deadline, a peer that does not read is a time-out at the deadline (the frame does not
 * fit in the socket's buffer), not a wait for ever; a reader in time gets the whole frame. */
static void
frame_send_until_deadline(void **state)
{
	struct p11mux_buf *out = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
	uint64_t start, took;
	uint8_t *p;
	int sv[2];

	(void)state;
	assert_int_equal(p11mux_buf_reserve(out, P11MUX_FRAME_MAX, &p), 0);
	memset(p, 0x5a, P11MUX_FRAME_MAX);
	socket_pair(sv);
	start = p11mux_now_ns();
	assert_int_equal(p11mux_frame_send_until(sv[0], out, start + 50 * 1000000ull),
	                 P11MUX_ERR_TIMEOUT);
	took = p11mux_now_ns() - start;
	assert_true(took >= 50 * 1000000ull);
	assert_true(took < 5000 * 1000000ull);
	close(sv[0]);
	close(sv[1]);
	/* A small frame fits in the buffer: sent at once, and read whole. */
	p11mux_buf_reset(out);
	assert_int_equal(p11mux_buf_put(out, "hello", 5), 0);
	socket_pair(sv);
	assert_int_equal(p11mux_frame_send_until(sv[0], out, p11mux_now_ns() + 5000 * 1000000ull),
	                 0);
	assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), 0);
	assert_int_equal(p11mux_buf_len(in), 5);
	close(sv[0]);
	close(sv[1]);
	p11mux_buf_free(out);
	p11mux_buf_free(in);
}

/* Sending to a closed peer is an error, not a SIGPIPE that kills the process. */
static void
frame_send_to_closed_peer(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	void (*old)(int) = signal(SIGPIPE, SIG_DFL);
	int sv[2];

	(void)state;
	socket_pair(sv);
	close(sv[1]);
	assert_int_equal(p11mux_buf_put(b, "x", 1), 0);
	assert_int_equal(p11mux_frame_send(sv[0], b), P11MUX_ERR_IO);
	close(sv[0]);
	signal(SIGPIPE, old);
	p11mux_buf_free(b);
}

/*
 * KNOWN BUG (run with "known-bugs"; fails only when built with clang's UBSan): a zero-length
 * frame received into a buffer that never held a byte makes p11mux_frame_recv() call
 * p11mux_buf_reserve(b, 0, &p) with b->d == NULL, and reserve computes NULL + 0 (undefined
 * behaviour, see test_buffer's bug_buffer_zero_length_on_fresh_buffer). A peer triggers it with
 * the 4 bytes 00 00 00 00 as its first frame.
 */
static void
bug_frame_zero_length_into_fresh_buffer(void **state)
{
	struct p11mux_buf *in = p11mux_buf_new(P11MUX_FRAME_MAX);
	int sv[2];

	(void)state;
	socket_pair(sv);
	write_all(sv[0], "\x00\x00\x00\x00", 4);
	assert_int_equal(p11mux_frame_recv(sv[1], in, P11MUX_FRAME_MAX), 0);
	assert_int_equal(p11mux_buf_len(in), 0);
	close(sv[0]);
	close(sv[1]);
	p11mux_buf_free(in);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(proto_call_table),
	        cmocka_unit_test(proto_roundtrip_requests),
	        cmocka_unit_test(proto_roundtrip_replies),
	        cmocka_unit_test(proto_reply_error_has_no_fields),
	        cmocka_unit_test(proto_wire_layout),
	        cmocka_unit_test(proto_truncated_requests),
	        cmocka_unit_test(proto_truncated_replies),
	        cmocka_unit_test(proto_trailing_garbage),
	        cmocka_unit_test(proto_trailing_after_error_reply),
	        cmocka_unit_test(proto_wrong_letter_refused),
	        cmocka_unit_test(proto_put_bytes_where_u_expected),
	        cmocka_unit_test(proto_mech_param_unknown_refused),
	        cmocka_unit_test(proto_mech_raw_length_decoded),
	        cmocka_unit_test(proto_mech_decode_kind_mismatch),
	        cmocka_unit_test(proto_count_exceeds_data),
	        cmocka_unit_test(proto_slot_mech_count_exceeds_data),
	        cmocka_unit_test(proto_count_boundaries),
	        cmocka_unit_test(proto_sticky_put),
	        cmocka_unit_test(proto_sticky_get),
	        cmocka_unit_test(proto_attr_malformed),
	        cmocka_unit_test(proto_unknown_call_refused),
	        cmocka_unit_test(proto_reply_to_other_call_refused),
	        cmocka_unit_test(proto_attr_is_ulong),
	        cmocka_unit_test(proto_strerror),
	        cmocka_unit_test(frame_roundtrip),
	        cmocka_unit_test(frame_wire_layout),
	        cmocka_unit_test(frame_header_over_cap),
	        cmocka_unit_test(frame_caps),
	        cmocka_unit_test(frame_closed_before_header),
	        cmocka_unit_test(frame_closed_mid_payload),
	        cmocka_unit_test(frame_recv_until_deadline),
	        cmocka_unit_test(frame_recv_late_reader),
	        cmocka_unit_test(frame_send_until_deadline),
	        cmocka_unit_test(frame_send_to_closed_peer),
	};
	const struct CMUnitTest known_bugs[] = {
	        cmocka_unit_test(bug_frame_zero_length_into_fresh_buffer),
	};

	if (argc > 1 && strcmp(argv[1], "known-bugs") == 0)
		return cmocka_run_group_tests_name("proto_known_bugs", known_bugs, NULL, NULL);
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
