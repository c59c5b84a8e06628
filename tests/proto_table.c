/* Prints the call table as the Markdown rows of docs/protocol.md; the doc_protocol test
 * checks that the document holds exactly these rows, so the table is described once. */
#include <stdio.h>

#include "proto.h"

int
main(void)
{
	int i;

	for (i = 1; i < P11MUX_CALL_COUNT; i++) {
		const struct p11mux_call_desc *c = &p11mux_calls[i];

		printf("| %u | %s | %s%s%s | %s%s%s | %s |\n", c->code, c->name,
		       *c->request ? "`" : "", *c->request ? c->request : "(none)",
		       *c->request ? "`" : "", *c->reply ? "`" : "",
		       *c->reply ? c->reply : "(none)", *c->reply ? "`" : "", c->doc);
	}
	return 0;
}
