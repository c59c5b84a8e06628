/* Prints the call tables as the Markdown rows of docs/protocol.md: the client protocol's,
 * then the helper protocol's. The doc_protocol test checks that the document holds exactly
 * these rows, in this order, so each table is described once. */
#include <stdio.h>

#include "hproto.h"
#include "proto.h"

static void
print(const struct p11mux_proto *p)
{
	uint32_t i;

	for (i = 1; i < p->ncalls; i++) {
		const struct p11mux_call_desc *c = &p->calls[i];

		printf("| %u | %s | %s%s%s | %s%s%s | %s |\n", c->code, c->name,
		       *c->request ? "`" : "", *c->request ? c->request : "(none)",
		       *c->request ? "`" : "", *c->reply ? "`" : "",
		       *c->reply ? c->reply : "(none)", *c->reply ? "`" : "", c->doc);
	}
}

int
main(void)
{
	print(&p11mux_client_proto);
	print(&helper_proto);
	return 0;
}
