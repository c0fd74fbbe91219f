/*
 * test_states.c - the session's tables: the verb table (every verb's
 * flags, expected reply kind and handler), the expect kinds that hold
 * back reading, and the two state machines' transition tables (client
 * mode, backend leg setup).  Builds with STATE_CHECKS abort on a
 * transition these tables refuse, so what they allow is what runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "session_int.h"

/* ---- the verb table ------------------------------------------------------- */

struct verb_case {
    enum smtp_verb verb;
    unsigned flags;
    enum expect_kind expect;
    bool has_refuse;        /* a check of its own */
    bool has_handler;
};

#define TLS SV_TLS_FIRST
#define HELO SV_HELO_FIRST
#define DIRTY SV_DIRTIES
#define WAIT SV_WAITS

static const struct verb_case verb_cases[] = {
    /* unknown verbs: only ehlo_pass ones are relayed (own check) */
    { SMTP_VERB_UNKNOWN, HELO | DIRTY, EXPECT_OTHER, true, true },
    { SMTP_VERB_EHLO, WAIT, EXPECT_EHLO, false, true },
    { SMTP_VERB_HELO, WAIT, EXPECT_HELO, false, true },
    /* MAIL's own check: the REQUIRETLS parameter (RFC 8689) */
    { SMTP_VERB_MAIL, TLS | HELO | DIRTY, EXPECT_OTHER, true, true },
    { SMTP_VERB_RCPT, TLS | HELO | DIRTY, EXPECT_OTHER, false, true },
    { SMTP_VERB_DATA, TLS | HELO | DIRTY | WAIT, EXPECT_DATA, false, true },
    { SMTP_VERB_BDAT, TLS | HELO | DIRTY | SV_OWN_REFUSAL, EXPECT_BDAT, false,
      true },
    /* what a clean backend session may see before the client's STARTTLS
     * without being replaced (README "How it works", step 5) */
    { SMTP_VERB_RSET, 0, EXPECT_OTHER, false, true },
    { SMTP_VERB_NOOP, 0, EXPECT_OTHER, false, true },
    { SMTP_VERB_HELP, 0, EXPECT_OTHER, false, true },
    { SMTP_VERB_QUIT, 0, EXPECT_QUIT, false, true },
    /* VRFY and EXPN need TLS first but no new EHLO after STARTTLS */
    { SMTP_VERB_VRFY, TLS | DIRTY, EXPECT_OTHER, false, true },
    { SMTP_VERB_EXPN, TLS | DIRTY, EXPECT_OTHER, false, true },
    { SMTP_VERB_STARTTLS, SV_LOCAL, EXPECT_STARTTLS, true, true },
    { SMTP_VERB_AUTH, TLS | HELO | DIRTY | WAIT, EXPECT_AUTH, true, true },
    /* never relayed: no handler is ever called */
    { SMTP_VERB_XCLIENT, SV_NEVER, EXPECT_LOCAL, false, false },
    { SMTP_VERB_XFORWARD, SV_NEVER, EXPECT_LOCAL, false, false },
    { SMTP_VERB_ETRN, DIRTY, EXPECT_OTHER, false, true },
};

static void test_verb_rows(void **state)
{
    bool seen[SMTP_VERB_COUNT] = {false};

    (void)state;
    for (size_t i = 0; i < sizeof verb_cases / sizeof verb_cases[0]; i++) {
        const struct verb_case *c = &verb_cases[i];
        const struct session_verb *v = session_verb(c->verb);

        print_message("verb %s\n", smtp_verb_name(c->verb));
        assert_int_equal(v->flags, c->flags);
        assert_int_equal(v->expect, c->expect);
        assert_int_equal(v->refuse != NULL, c->has_refuse);
        assert_int_equal(v->handle != NULL, c->has_handler);
        seen[c->verb] = true;
    }
    for (unsigned v = 0; v < SMTP_VERB_COUNT; v++)
        assert_true(seen[v]);          /* a new verb needs a row here */
}

/* a verb that waits owes a reply kind that holds back reading, and one
 * that does not, does not (the FIFO counts those kinds) */
static void test_verb_waits_matches_expect(void **state)
{
    (void)state;
    for (unsigned v = 0; v < SMTP_VERB_COUNT; v++) {
        const struct session_verb *row = session_verb((enum smtp_verb)v);

        if (row->flags & (SV_NEVER | SV_LOCAL | SV_OWN_REFUSAL))
            continue;
        print_message("verb %s\n", smtp_verb_name((enum smtp_verb)v));
        assert_int_equal((row->flags & SV_WAITS) != 0,
                         session_expect_waits((enum expect_kind)row->expect));
    }
}

static void test_verb_out_of_range(void **state)
{
    (void)state;
    assert_ptr_equal(session_verb(SMTP_VERB_COUNT),
                     session_verb(SMTP_VERB_UNKNOWN));
    assert_ptr_equal(session_verb((enum smtp_verb)1000),
                     session_verb(SMTP_VERB_UNKNOWN));
}

static void test_expect_waits(void **state)
{
    static const enum expect_kind waits[] = {
        EXPECT_EHLO, EXPECT_HELO, EXPECT_HELO_FALLBACK, EXPECT_DATA,
        EXPECT_AUTH, EXPECT_XCLIENT};
    unsigned n = 0;

    (void)state;
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++)
        assert_true(session_expect_waits(waits[i]));
    for (unsigned k = 0; k < EXPECT_NKINDS; k++)
        n += session_expect_waits((enum expect_kind)k);
    assert_int_equal(n, sizeof waits / sizeof waits[0]);
}

/* ---- the client mode machine --------------------------------------------- */

struct move {
    int from, to;
};

static const struct move client_legal[] = {
    { CLIENT_COMMAND, CLIENT_DATA },      /* 354 */
    { CLIENT_COMMAND, CLIENT_BDAT },
    { CLIENT_COMMAND, CLIENT_BDAT_SKIP }, /* a refused chunk */
    { CLIENT_COMMAND, CLIENT_AUTH },      /* 334 */
    { CLIENT_COMMAND, CLIENT_SKIP_LINE },
    { CLIENT_COMMAND, CLIENT_STARTTLS },
    { CLIENT_COMMAND, CLIENT_HANDSHAKE }, /* implicit TLS */
    { CLIENT_COMMAND, CLIENT_QUIT },
    { CLIENT_DATA, CLIENT_COMMAND },
    { CLIENT_BDAT, CLIENT_COMMAND },
    { CLIENT_BDAT_SKIP, CLIENT_COMMAND },
    { CLIENT_AUTH, CLIENT_COMMAND },
    { CLIENT_AUTH, CLIENT_SKIP_LINE },
    { CLIENT_SKIP_LINE, CLIENT_COMMAND },
    { CLIENT_STARTTLS, CLIENT_HANDSHAKE },
    { CLIENT_HANDSHAKE, CLIENT_COMMAND },
};

static bool in_moves(const struct move *m, size_t n, int from, int to)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].from == from && m[i].to == to)
            return true;
    return false;
}

/* exactly the listed moves (and staying put) are legal */
static void test_client_transitions(void **state)
{
    size_t n = sizeof client_legal / sizeof client_legal[0];

    (void)state;
    for (int f = 0; f < CLIENT_NMODES; f++)
        for (int t = 0; t < CLIENT_NMODES; t++) {
            bool want = f == t || in_moves(client_legal, n, f, t);

            print_message("%s -> %s\n", session_mode_name(f),
                          session_mode_name(t));
            assert_int_equal(session_transition_ok(f, t), want);
        }
    /* nothing leaves QUIT; TLS is never left half-way back to plaintext */
    assert_false(session_transition_ok(CLIENT_QUIT, CLIENT_COMMAND));
    assert_false(session_transition_ok(CLIENT_STARTTLS, CLIENT_COMMAND));
    assert_false(session_transition_ok(CLIENT_DATA, CLIENT_BDAT));
    assert_false(session_transition_ok(CLIENT_NMODES, CLIENT_COMMAND));
    assert_false(session_transition_ok(CLIENT_COMMAND, CLIENT_NMODES));
    assert_string_equal(session_mode_name(CLIENT_BDAT_SKIP), "bdat_skip");
    assert_string_equal(session_mode_name(CLIENT_NMODES), "?");
}

/* ---- the backend leg's setup machine ------------------------------------- */

static const struct move backend_legal[] = {
    { BACKEND_IDLE, BACKEND_RESOLVING },
    { BACKEND_IDLE, BACKEND_CONNECTING },
    { BACKEND_RESOLVING, BACKEND_CONNECTING },
    { BACKEND_CONNECTING, BACKEND_TLS_IMPLICIT },
    { BACKEND_CONNECTING, BACKEND_GREETING },
    { BACKEND_TLS_IMPLICIT, BACKEND_GREETING },
    { BACKEND_GREETING, BACKEND_EHLO },
    { BACKEND_GREETING, BACKEND_XCLIENT_EHLO },   /* no TLS, XCLIENT */
    { BACKEND_GREETING, BACKEND_READY },
    { BACKEND_EHLO, BACKEND_STARTTLS },
    { BACKEND_EHLO, BACKEND_XCLIENT },            /* caps already known */
    { BACKEND_EHLO, BACKEND_READY },
    { BACKEND_STARTTLS, BACKEND_TLS_HANDSHAKE },
    { BACKEND_STARTTLS, BACKEND_XCLIENT_EHLO },   /* STARTTLS refused */
    { BACKEND_STARTTLS, BACKEND_READY },
    { BACKEND_TLS_HANDSHAKE, BACKEND_XCLIENT_EHLO },
    { BACKEND_TLS_HANDSHAKE, BACKEND_READY },
    { BACKEND_XCLIENT_EHLO, BACKEND_XCLIENT },
    { BACKEND_XCLIENT_EHLO, BACKEND_READY },
    { BACKEND_XCLIENT, BACKEND_READY },
    /* backend_auth: EHLO over TLS, then AUTH (never with XCLIENT) */
    { BACKEND_GREETING, BACKEND_AUTH_EHLO },      /* implicit TLS */
    { BACKEND_TLS_HANDSHAKE, BACKEND_AUTH_EHLO },
    { BACKEND_AUTH_EHLO, BACKEND_AUTH },
    { BACKEND_AUTH, BACKEND_AUTH_USER },          /* LOGIN: 334 */
    { BACKEND_AUTH, BACKEND_READY },              /* PLAIN: 235 */
    { BACKEND_AUTH_USER, BACKEND_AUTH_PASSWORD },
    { BACKEND_AUTH_PASSWORD, BACKEND_READY },
};

static void test_backend_transitions(void **state)
{
    size_t n = sizeof backend_legal / sizeof backend_legal[0];

    (void)state;
    for (int f = 0; f < BACKEND_NSTATES; f++)
        for (int t = 0; t < BACKEND_NSTATES; t++) {
            /* failing and being stopped can happen anywhere */
            bool want = t == BACKEND_FAILED || t == BACKEND_IDLE ||
                        in_moves(backend_legal, n, f, t);

            print_message("%s -> %s\n", backend_state_name(f),
                          backend_state_name(t));
            assert_int_equal(backend_transition_ok(f, t), want);
        }
    /* the handshake is never skipped on the way from STARTTLS to EHLO */
    assert_false(backend_transition_ok(BACKEND_STARTTLS, BACKEND_EHLO));
    assert_false(backend_transition_ok(BACKEND_READY, BACKEND_EHLO));
    assert_false(backend_transition_ok(BACKEND_NSTATES, BACKEND_IDLE));
    assert_string_equal(backend_state_name(BACKEND_TLS_HANDSHAKE),
                        "tls_handshake");
    assert_string_equal(backend_state_name(BACKEND_NSTATES), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verb_rows),
        cmocka_unit_test(test_verb_waits_matches_expect),
        cmocka_unit_test(test_verb_out_of_range),
        cmocka_unit_test(test_expect_waits),
        cmocka_unit_test(test_client_transitions),
        cmocka_unit_test(test_backend_transitions),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
