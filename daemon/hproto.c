#include "hproto.h"

const struct p11mux_call_desc helper_calls[HELPER_CALL_COUNT] = {
        [HELPER_TOKENS] = {HELPER_TOKENS, "TOKENS", "y", "P",
                           "module -> every token present: slot, slot info, token info, "
                           "mechanisms"},
        [HELPER_INIT] = {HELPER_INIT, "INIT", "yyuu", "P",
                         "module, token (serial or label), slot to look at first, workers "
                         "-> the token found"},
        [HELPER_LOGIN] = {HELPER_LOGIN, "LOGIN", "y", "", "PIN -> logs the token in"},
        [HELPER_FIND] = {HELPER_FIND, "FIND", "", "U", "-> the handles of every object"},
        [HELPER_READ] = {HELPER_READ, "READ", "u", "uuA",
                         "object -> class, key type, attributes with status"},
        [HELPER_OP] = {HELPER_OP, "OP", "uMuyy", "y",
                       "call, mechanism, key, data, signature -> output"},
        [HELPER_RANDOM] = {HELPER_RANDOM, "RANDOM", "u", "y", "length -> random bytes"},
};

const struct p11mux_proto helper_proto = {"helper", helper_calls, HELPER_CALL_COUNT, 0};
