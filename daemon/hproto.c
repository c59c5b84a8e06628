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
        [HELPER_CREATE] = {HELPER_CREATE, "CREATE", "A", "uuuA",
                           "template -> a session object: handle, class, key type, "
                           "attributes"},
        [HELPER_GENERATE] = {HELPER_GENERATE, "GENERATE", "MA", "uuuA",
                             "mechanism, template -> a session key: handle, class, key type, "
                             "attributes"},
        [HELPER_GENERATE_PAIR] = {HELPER_GENERATE_PAIR, "GENERATE_PAIR", "MAA", "uuuAuuuA",
                                  "mechanism, public and private templates -> both keys: "
                                  "handle, class, key type, attributes each"},
        [HELPER_DESTROY] = {HELPER_DESTROY, "DESTROY", "u", "", "session object -> destroyed"},
};

const struct p11mux_proto helper_proto = {"helper", helper_calls, HELPER_CALL_COUNT, 0};
