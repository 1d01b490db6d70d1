/* outcome: see outcome.h. */
#include "sm/outcome.h"

const char *outcome_name(enum outcome o)
{
    static const char *const names[OUTCOME__COUNT] = {
        [OUTCOME_OK] = "ok",
        [OUTCOME_NOT_LEADER] = "not leader",
        [OUTCOME_NO_GROUP] = "no such group",
        [OUTCOME_BAD_REQUEST] = "bad request",
        [OUTCOME_UNAVAILABLE] = "unavailable",
        [OUTCOME_WRONG_EPOCH] = "wrong epoch",
        [OUTCOME_TOO_LARGE] = "too large",
        [OUTCOME_CLOSING] = "closing",
        [OUTCOME_BUSY] = "busy",
        [OUTCOME_EXPIRED] = "expired",
    };

    if ((unsigned)o >= OUTCOME__COUNT) {
        return "?";
    }
    return names[o];
}
