/*
 * test_config.c - config_load(): every key, defaults, every error.
 *
 * Table-driven: each case is a file body.  A good case lists lines that
 * must appear in a text dump of the loaded config; a bad case lists every
 * error line expected, in order, as (line, message substring), and the
 * loader must report exactly those.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* A minimal valid service, header on line 1, four lines. */
#define SVC "[in]\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:25\n" \
            "client_tls = none\n"
/* The same with TLS on, six lines. */
#define SVC_TLS "[in]\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:25\n" \
                "cert = /c.pem\nkey = /k.pem\n"

/* A line with a NUL byte in it (line 2). */
#define NUL_TEXT "[in]\nlisten = 127.0.0.1:2525\0x\nbackend = h:25\n" \
                 "client_tls = none\n"

struct ok_case {
    const char *name;
    const char *text;
    const char *want[24];  /* lines of the dump, NULL-terminated */
};

struct want_err {
    int line;
    const char *msg;
};

struct err_case {
    const char *name;
    const char *text;
    size_t len;                 /* 0: strlen(text) */
    struct want_err want[8];    /* msg NULL ends the list */
};

static const struct ok_case ok_cases[] = {
    { "defaults", SVC,
      { "services=1", "log_level=info", "workers=0", "in.line=1",
        "in.listen=127.0.0.1:2525", "in.backend_host=127.0.0.1",
        "in.backend_port=25", "in.client_tls=none",
        "in.client_implicit_tls=no", "in.cert=(null)", "in.key=(null)",
        "in.client_plaintext_auth=no", "in.backend_tls=may",
        "in.backend_implicit_tls=no", "in.backend_ca_file=(null)",
        "in.backend_verify_name=127.0.0.1", "in.idle_timeout=300",
        "in.max_line_length=2048", NULL } },
    { "every key",
      "[proxy]\nhostname = mx.example.com\nlog_level = debug\nworkers = 4\n"
      "[relay]\nlisten = 0.0.0.0:465\nbackend = smtp.example.net:587\n"
      "client_tls = encrypt\nclient_implicit_tls = yes\n"
      "cert = /etc/ssl/mx.pem\nkey = /etc/ssl/mx.key\n"
      "client_plaintext_auth = yes\nbackend_tls = verify\n"
      "backend_implicit_tls = yes\nbackend_ca_file = /etc/ssl/ca.pem\n"
      "backend_verify_name = relay.example.net\nidle_timeout = 60\n"
      "max_line_length = 4096\n",
      { "services=1", "hostname=mx.example.com", "log_level=debug",
        "workers=4", "relay.line=5", "relay.listen=0.0.0.0:465",
        "relay.backend_host=smtp.example.net", "relay.backend_port=587",
        "relay.client_tls=encrypt", "relay.client_implicit_tls=yes",
        "relay.cert=/etc/ssl/mx.pem", "relay.key=/etc/ssl/mx.key",
        "relay.client_plaintext_auth=yes", "relay.backend_tls=verify",
        "relay.backend_implicit_tls=yes",
        "relay.backend_ca_file=/etc/ssl/ca.pem",
        "relay.backend_verify_name=relay.example.net",
        "relay.idle_timeout=60", "relay.max_line_length=4096", NULL } },
    { "log_level error", "[proxy]\nlog_level = error\n" SVC,
      { "log_level=error", NULL } },
    { "log_level warn, any case", "[proxy]\nlog_level = WARN\n" SVC,
      { "log_level=warn", NULL } },
    { "client_tls may, backend_tls none and encrypt",
      SVC_TLS "client_tls = May\nbackend_tls = none\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "backend_tls = encrypt\n",
      { "in.client_tls=may", "in.backend_tls=none",
        "b.backend_tls=encrypt", NULL } },
    { "IPv6, several listen addresses, *",
      "[in]\nlisten = [::1]:25, 0.0.0.0:465,[2001:DB8::1]:587 ,\t*:2525\n"
      "backend = 127.0.0.1:25\nclient_tls = none\n",
      { "in.listen=[::1]:25,0.0.0.0:465,[2001:db8::1]:587,0.0.0.0:2525",
        NULL } },
    { "same port on other addresses and families",
      "[a]\nlisten = 127.0.0.1:25, [::1]:25\nbackend = h:25\n"
      "client_tls = none\n"
      "[b]\nlisten = 127.0.0.2:25, [::]:25, 127.0.0.1:26\nbackend = h:25\n"
      "client_tls = none\n",
      { "services=2", "a.line=1", "b.line=5",
        "b.listen=127.0.0.2:25,[::]:25,127.0.0.1:26", NULL } },
    { "backend IPv6",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = [::1]:2525\n"
      "client_tls = none\n",
      { "in.backend_host=::1", "in.backend_port=2525",
        "in.backend_verify_name=::1", NULL } },
    { "backend name, leading zeros, underscore",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = smtp_backend.local:0025\n"
      "client_tls = none\n",
      { "in.backend_host=smtp_backend.local", "in.backend_port=25",
        "in.backend_verify_name=smtp_backend.local", NULL } },
    { "comments, blanks, indentation, CRLF, BOM, colon",
      "\xef\xbb\xbf; leading comment\r\n"
      "# hash comment\n"
      "\n"
      "   \t\n"
      "  [in]   ; header comment\n"
      "\tlisten = 127.0.0.1:2525 ; inline comment\r\n"
      "    backend: 127.0.0.1:25\n"
      "  # indented comment\n"
      "client_tls = none\n"
      "[in2] # hash after header\n"
      "listen=127.0.0.1:2526\r\n"
      "backend=h:25\n"
      "client_tls=none\n"
      "backend_ca_file = /a;b#c\n"
      "backend_verify_name = v.example\t# hash comment after a tab\n"
      "[proxy] ; c\n"
      "hostname = h.example # hash comment after a blank\n",
      { "in.line=5", "in.listen=127.0.0.1:2525", "in.backend_port=25",
        "in2.line=10", "in2.backend_ca_file=/a;b#c",
        "in2.backend_verify_name=v.example", "hostname=h.example", NULL } },
    { "booleans",
      SVC_TLS "client_implicit_tls = TRUE\nclient_plaintext_auth = On\n"
      "backend_implicit_tls = 1\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "client_implicit_tls = False\nclient_plaintext_auth = off\n"
      "backend_implicit_tls = 0\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "client_implicit_tls = no\nclient_plaintext_auth = Yes\n",
      { "in.client_implicit_tls=yes", "in.client_plaintext_auth=yes",
        "in.backend_implicit_tls=yes", "b.client_implicit_tls=no",
        "b.client_plaintext_auth=no", "b.backend_implicit_tls=no",
        "c.client_implicit_tls=no", "c.client_plaintext_auth=yes", NULL } },
    { "empty values keep the defaults",
      "[proxy]\nlog_level =\n"
      SVC "backend_ca_file =\nbackend_verify_name =   ; default\n"
      "idle_timeout =\nmax_line_length=\nbackend_tls =\ncert=\n",
      { "log_level=info", "in.backend_ca_file=(null)",
        "in.backend_verify_name=127.0.0.1", "in.idle_timeout=300",
        "in.max_line_length=2048", "in.backend_tls=may", "in.cert=(null)",
        NULL } },
    { "workers bounds", "[proxy]\nworkers = 256\n" SVC,
      { "workers=256", NULL } },
    { "workers 0: one per CPU", "[proxy]\nworkers = 0\n" SVC,
      { "workers=0", NULL } },
    { "lowest numbers",
      SVC "idle_timeout = 1\nmax_line_length = 512\n",
      { "in.idle_timeout=1", "in.max_line_length=512", NULL } },
    { "highest numbers",
      SVC "idle_timeout = 86400\nmax_line_length = 65536\n",
      { "in.idle_timeout=86400", "in.max_line_length=65536", NULL } },
    { "leading zeros", SVC "idle_timeout = 007\n",
      { "in.idle_timeout=7", NULL } },
    { "CA file and verify name are allowed with backend_tls none",
      SVC "backend_tls = none\nbackend_ca_file = /ca.pem\n"
      "backend_verify_name = 192.0.2.1\n",
      { "in.backend_tls=none", "in.backend_ca_file=/ca.pem",
        "in.backend_verify_name=192.0.2.1", NULL } },
    { "verify name IPv6", SVC "backend_verify_name = 2001:db8::25\n",
      { "in.backend_verify_name=2001:db8::25", NULL } },
    { "[proxy] after the services, any case",
      SVC "[Proxy]\nHOSTNAME = relay-1.example.org\n",
      { "hostname=relay-1.example.org", "services=1", NULL } },
    { "key names in any case", "[in]\nListen = 127.0.0.1:2525\n"
      "BACKEND = h:25\nClient_TLS = none\n",
      { "in.listen=127.0.0.1:2525", "in.backend_host=h", NULL } },
    { "implicit TLS with cert and key",
      SVC_TLS "client_implicit_tls = yes\nclient_tls = encrypt\n",
      { "in.client_implicit_tls=yes", "in.client_tls=encrypt",
        "in.cert=/c.pem", "in.key=/k.pem", NULL } },
    { "backend implicit TLS",
      SVC "backend_implicit_tls = yes\nbackend_tls = encrypt\n",
      { "in.backend_implicit_tls=yes", "in.backend_tls=encrypt", NULL } },
    { "long comment lines",
      "; " "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890\n"
      SVC,
      { "in.line=2", NULL } },
    { "long inline comments",
      "[in] ; 0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890\n"
      "listen = 127.0.0.1:2525 # 0123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890\n"
      "backend = h:25\t; 0123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890\n"
      "client_tls = none\n",
      { "in.listen=127.0.0.1:2525", "in.backend_host=h", NULL } },
    { "last line without newline", "[in]\nlisten = 127.0.0.1:2525\n"
      "client_tls = none\nbackend = h:2525",
      { "in.backend_port=2525", NULL } },
    { "blanks inside the brackets", "[ in\t]\nlisten = 127.0.0.1:2525\n"
      "backend = h:25\nclient_tls = none\n",
      { "in.line=1", NULL } },
    { "section name characters",
      "[a-b_c.D9]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "client_tls = none\n",
      { "a-b_c.D9.line=1", NULL } },
};

static const struct err_case err_cases[] = {
    { "empty file", "", 0, { { 0, "no service defined" } } },
    { "only comments", "; nothing\n# here\n\n", 0,
      { { 0, "no service defined" } } },
    { "only [proxy]", "[proxy]\nlog_level = info\n", 0,
      { { 0, "no service defined" } } },
    { "unknown key in a service", SVC "colour = blue\n", 0,
      { { 5, "unknown key \"colour\"" } } },
    { "unknown key in [proxy]", "[proxy]\nlisten_backlog = 5\n" SVC, 0,
      { { 2, "unknown key \"listen_backlog\"" } } },
    { "service key in [proxy]", "[proxy]\nbackend = h:25\n" SVC, 0,
      { { 2, "key backend belongs in a service section, not [proxy]" } } },
    { "proxy key in a service", SVC "log_level = debug\n", 0,
      { { 5, "key log_level belongs in [proxy], not in a service" } } },
    { "key before any section", "log_level = info\n" SVC, 0,
      { { 1, "key \"log_level\" before any [section]" } } },
    { "empty key name", SVC "= value\n", 0,
      { { 5, "unknown key \"\"" } } },
    { "key given twice", SVC "listen = 127.0.0.1:2526\n", 0,
      { { 5, "listen given twice (first on line 2)" } } },
    { "key given twice, other case, empty", SVC "LISTEN =\n", 0,
      { { 5, "listen given twice (first on line 2)" } } },
    { "proxy key given twice",
      "[proxy]\nhostname = a.example\nhostname = b.example\n" SVC, 0,
      { { 3, "hostname given twice (first on line 2)" } } },
    { "section given twice, its keys ignored",
      SVC "[in]\nbogus = 1\nlisten = nonsense\n", 0,
      { { 5, "section [in] given twice (first on line 1)" } } },
    { "section given twice, other case", SVC "[IN]\n", 0,
      { { 5, "section [IN] given twice (first on line 1)" } } },
    { "[proxy] given twice", "[proxy]\n" SVC "[proxy]\nlog_level = x\n", 0,
      { { 6, "section [proxy] given twice (first on line 1)" } } },
    { "number with junk", SVC "idle_timeout = 30x\n", 0,
      { { 5, "idle_timeout: \"30x\" is not a number" } } },
    { "negative number", SVC "idle_timeout = -1\n", 0,
      { { 5, "idle_timeout: \"-1\" is not a number" } } },
    { "plus sign", SVC "idle_timeout = +5\n", 0,
      { { 5, "idle_timeout: \"+5\" is not a number" } } },
    { "hex number", SVC "idle_timeout = 0x10\n", 0,
      { { 5, "idle_timeout: \"0x10\" is not a number" } } },
    { "blank inside number", SVC "idle_timeout = 1 0\n", 0,
      { { 5, "idle_timeout: \"1 0\" is not a number" } } },
    { "zero", SVC "idle_timeout = 0\n", 0,
      { { 5, "idle_timeout: \"0\" is out of range (1..86400)" } } },
    { "too big", SVC "idle_timeout = 99999999999\n", 0,
      { { 5, "idle_timeout: \"99999999999\" is out of range (1..86400)" } } },
    { "overflow", SVC "idle_timeout = 999999999999999999999999\n", 0,
      { { 5, "is out of range (1..86400)" } } },
    { "one over", SVC "idle_timeout = 86401\n", 0,
      { { 5, "idle_timeout: \"86401\" is out of range" } } },
    { "workers too many", "[proxy]\nworkers = 257\n" SVC, 0,
      { { 2, "workers: \"257\" is out of range (0..256)" } } },
    { "workers negative", "[proxy]\nworkers = -1\n" SVC, 0,
      { { 2, "workers: \"-1\" is not a number" } } },
    { "workers in a service", SVC "workers = 2\n", 0,
      { { 5, "key workers belongs in [proxy], not in a service" } } },
    { "max_line_length low", SVC "max_line_length = 511\n", 0,
      { { 5, "max_line_length: \"511\" is out of range (512..65536)" } } },
    { "max_line_length high", SVC "max_line_length = 65537\n", 0,
      { { 5, "max_line_length: \"65537\" is out of range (512..65536)" } } },
    { "bad boolean", SVC "client_plaintext_auth = maybe\n", 0,
      { { 5, "client_plaintext_auth: \"maybe\" is not yes or no" } } },
    { "bad client_tls", SVC_TLS "client_tls = required\n", 0,
      { { 6, "client_tls: \"required\" is not one of none, may, encrypt" } } },
    { "bad backend_tls", SVC "backend_tls = verify-full\n", 0,
      { { 5, "backend_tls: \"verify-full\" is not one of none, may, "
             "encrypt, verify" } } },
    { "bad log_level", "[proxy]\nlog_level = verbose\n" SVC, 0,
      { { 2, "log_level: \"verbose\" is not one of error, warn, info, "
             "debug" } } },
    { "listen without port",
      "[in]\nlisten = 127.0.0.1\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: \"127.0.0.1\": expected \"address:port\"" } } },
    { "listen port 0",
      "[in]\nlisten = 127.0.0.1:0\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: port \"0\" is out of range (1..65535)" } } },
    { "listen port 65536",
      "[in]\nlisten = 127.0.0.1:65536\nbackend = h:25\nclient_tls = none\n",
      0, { { 2, "listen: port \"65536\" is out of range (1..65535)" } } },
    { "listen port not a number",
      "[in]\nlisten = 127.0.0.1:smtp\nbackend = h:25\nclient_tls = none\n",
      0, { { 2, "listen: port \"smtp\" is not a number" } } },
    { "listen IPv6 without brackets",
      "[in]\nlisten = ::1:25\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: \"::1:25\": an IPv6 address needs brackets" } } },
    { "listen IPv6 without colon",
      "[in]\nlisten = [::1]25\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: \"[::1]25\": expected \"[address]:port\"" } } },
    { "listen IPv6 without ]",
      "[in]\nlisten = [::1:25\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "expected \"[address]:port\"" } } },
    { "listen bad IPv6",
      "[in]\nlisten = [zz]:25\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: \"zz\" is not a numeric IPv6 address" } } },
    { "listen IPv4 in brackets",
      "[in]\nlisten = [127.0.0.1]:25\nbackend = h:25\nclient_tls = none\n",
      0, { { 2, "listen: \"127.0.0.1\" is not a numeric IPv6 address" } } },
    { "listen name",
      "[in]\nlisten = localhost:25\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: \"localhost\" is not a numeric IPv4 address" } } },
    { "listen empty item",
      "[in]\nlisten = 127.0.0.1:25,,127.0.0.1:26\nbackend = h:25\n"
      "client_tls = none\n", 0,
      { { 2, "listen: empty address in the list" } } },
    { "listen trailing comma",
      "[in]\nlisten = 127.0.0.1:25,\nbackend = h:25\nclient_tls = none\n", 0,
      { { 2, "listen: empty address in the list" } } },
    { "listen twice in one list",
      "[in]\nlisten = [::1]:25, [0::1]:25\nbackend = h:25\n"
      "client_tls = none\n", 0,
      { { 2, "listen: [::1]:25 given twice" } } },
    { "listen * and 0.0.0.0",
      "[in]\nlisten = *:25,0.0.0.0:25\nbackend = h:25\nclient_tls = none\n",
      0, { { 2, "listen: 0.0.0.0:25 given twice" } } },
    { "listen address in two services",
      SVC "[b]\nbackend = h:25\nclient_tls = none\n"
      "listen = 127.0.0.1:1, 127.0.0.1:2525\n", 0,
      { { 8, "listen: 127.0.0.1:2525 is already used by service [in] "
             "(line 2)" } } },
    { "backend without host", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = :25\nclient_tls = none\n", 0,
      { { 3, "backend: \"\" is not a valid host name" } } },
    { "backend without port", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = mail.example\nclient_tls = none\n", 0,
      { { 3, "backend: \"mail.example\": expected \"address:port\"" } } },
    { "backend empty port", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = h:\nclient_tls = none\n", 0,
      { { 3, "backend: port \"\" is not a number" } } },
    { "backend port 70000", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = h:70000\nclient_tls = none\n", 0,
      { { 3, "backend: port \"70000\" is out of range (1..65535)" } } },
    { "backend blank in name", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = ho st:25\nclient_tls = none\n", 0,
      { { 3, "backend: \"ho st\" is not a valid host name" } } },
    { "backend empty label", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = a..b:25\nclient_tls = none\n", 0,
      { { 3, "backend: \"a..b\" is not a valid host name" } } },
    { "backend leading hyphen", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = -h:25\nclient_tls = none\n", 0,
      { { 3, "backend: \"-h\" is not a valid host name" } } },
    { "backend IPv6 without brackets", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = ::1:25\nclient_tls = none\n", 0,
      { { 3, "an IPv6 address needs brackets" } } },
    { "backend bad IPv6", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = [mail]:25\nclient_tls = none\n", 0,
      { { 3, "backend: \"mail\" is not a numeric IPv6 address" } } },
    { "backend IPv6 without ]", "[in]\nlisten = 127.0.0.1:25\n"
      "backend = [::1:25\nclient_tls = none\n", 0,
      { { 3, "backend: \"[::1:25\": expected \"[address]:port\"" } } },
    { "bad verify name", SVC "backend_verify_name = a b\n", 0,
      { { 5, "backend_verify_name: \"a b\" is not a host name or address" } } },
    { "missing listen and backend", "[proxy]\n[in]\nclient_tls = none\n", 0,
      { { 2, "service [in]: listen is required" },
        { 2, "service [in]: backend is required" } } },
    { "empty listen", "[in]\nlisten =\nbackend = h:25\nclient_tls = none\n",
      0, { { 1, "service [in]: listen is required" } } },
    { "section without keys", SVC "[empty]\n", 0,
      { { 5, "service [empty]: listen is required" },
        { 5, "service [empty]: backend is required" },
        { 5, "service [empty]: cert and key are required" } } },
    { "TLS by default needs cert and key",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n", 0,
      { { 1, "service [in]: cert and key are required unless client_tls = "
             "none" } } },
    { "encrypt with cert only",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "client_tls = encrypt\ncert = /c.pem\n", 0,
      { { 1, "service [in]: key is required" } } },
    { "may with key only",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\nkey = /k.pem\n", 0,
      { { 1, "service [in]: cert is required" } } },
    { "implicit TLS needs TLS",
      SVC "client_implicit_tls = yes\n", 0,
      { { 1, "service [in]: client_implicit_tls needs TLS, but "
             "client_tls = none" },
        { 1, "service [in]: cert and key are required" } } },
    { "implicit TLS needs TLS, with cert",
      SVC "client_implicit_tls = yes\ncert = /c\nkey = /k\n", 0,
      { { 1, "client_implicit_tls needs TLS" } } },
    { "backend implicit TLS needs TLS",
      SVC "backend_implicit_tls = yes\nbackend_tls = none\n", 0,
      { { 1, "service [in]: backend_implicit_tls needs TLS, but "
             "backend_tls = none" } } },
    { "bad hostname", "[proxy]\nhostname = bad_host.example\n" SVC, 0,
      { { 2, "hostname: \"bad_host.example\" is not a valid domain name" } } },
    { "hostname with empty label", "[proxy]\nhostname = a..example\n" SVC,
      0, { { 2, "hostname: \"a..example\" is not a valid domain name" } } },
    { "hostname label too long",
      "[proxy]\nhostname = "
      "a123456789a123456789a123456789a123456789a123456789a123456789abcd"
      ".example\n" SVC, 0,
      { { 2, "is not a valid domain name" } } },
    { "line without =", SVC "client_tls\n", 0,
      { { 5, "expected \"key = value\" or \"[section]\"" } } },
    { "header without ]", SVC "[other\nlisten = x\n", 0,
      { { 5, "missing ']' in section header" } } },
    { "text after header", SVC "[other] x\nlisten = x\n", 0,
      { { 5, "text after the section header: \"x\"" } } },
    { "empty section name", SVC "[ ]\nlisten = x\n", 0,
      { { 5, "empty section name" } } },
    { "bad section name", SVC "[my service]\n", 0,
      { { 5, "bad section name \"my service\"" } } },
    { "section name too long", SVC
      "[a123456789a123456789a123456789a123456789a123456789a123456789abcde]\n",
      0, { { 5, "bad section name" } } },
    { "control character", "[in]\nlisten = 127.0.0.1:2525\x01\n"
      "backend = h:25\nclient_tls = none\n", 0,
      { { 2, "control character \\x01 in line" },
        { 1, "service [in]: listen is required" } } },
    { "NUL byte", NUL_TEXT, sizeof NUL_TEXT - 1,
      { { 2, "control character \\x00 in line" },
        { 1, "service [in]: listen is required" } } },
    { "key line too long", SVC "cert = /"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890\n",
      0, { { 5, "line too long (at most 199 bytes before a comment)" } } },
    { "line too long for the buffer", SVC "cert = /"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890"
      "0123456789012345678901234567890123456789012345678901234567890 ; c\n"
      "idle_timeout = x\n",
      0, { { 5, "line too long" }, { 6, "idle_timeout: \"x\"" } } },
    { "bad value quoted with escapes", SVC "backend_tls = \x1b[31m\n", 0,
      { { 5, "control character \\x1b in line" } } },
    { "non-ASCII value escaped", SVC "backend_tls = v\xc3\xa9rify\n", 0,
      { { 5, "backend_tls: \"v\\xc3\\xa9rify\" is not one of" } } },
    { "quotes and backslashes escaped", SVC "backend_tls = \"a\\b\"\n", 0,
      { { 5, "backend_tls: \"\\\"a\\\\b\\\"\" is not one of" } } },
    { "long value cut in the message", SVC "backend_tls = "
      "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijXYZ\n", 0,
      { { 5, "backend_tls: \"abcdefghijabcdefghijabcdefghijabcdefghij"
             "abcdefghijabcdefghij...\" is not one of" } } },
    { "every error is reported, in order",
      "[proxy]\n"
      "log_level = loud\n"            /* 2 */
      "colour = red\n"                /* 3 */
      "[a]\n"                         /* 4 */
      "listen = 127.0.0.1:2525\n"
      "backend = h:99999\n"           /* 6 */
      "idle_timeout = 30x\n"          /* 7 */
      "client_tls = none\n"
      "nonsense\n"                    /* 9 */
      "[b]\n"                         /* 10 */
      "client_tls = none\n"
      "[a]\n",                        /* 12 */
      0,
      { { 2, "log_level: \"loud\" is not one of" },
        { 3, "unknown key \"colour\"" },
        { 6, "backend: port \"99999\" is out of range" },
        { 7, "idle_timeout: \"30x\" is not a number" },
        { 9, "expected \"key = value\"" },
        { 12, "section [a] given twice (first on line 4)" },
        { 10, "service [b]: listen is required" },
        { 10, "service [b]: backend is required" } } },
    { "a bad value does not cause more errors",
      "[in]\nlisten = 127.0.0.1:0\nbackend = h\nclient_tls = strict\n", 0,
      { { 2, "listen: port \"0\" is out of range" },
        { 3, "backend: \"h\": expected \"address:port\"" },
        { 4, "client_tls: \"strict\" is not one of" } } },
};

/* write_temp - a new file under /tmp holding len bytes of text; its path
 * goes to path (at least 32 bytes). */
static void write_temp(char *path, const char *text, size_t len)
{
    int fd;

    strcpy(path, "/tmp/test_config_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static const char *bool_text(bool b)
{
    return b ? "yes" : "no";
}

static const char *str_text(const char *s)
{
    return s != NULL ? s : "(null)";
}

/* dump - cfg as "key=value" lines, service keys prefixed "name.". */
static char *dump(const struct config *cfg)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    static const char *const ctls[] = { "none", "may", "encrypt" };
    static const char *const btls[] = { "none", "may", "encrypt", "verify" };
    char *buf = NULL;
    size_t len = 0, i, j;
    FILE *m = open_memstream(&buf, &len);

    assert_non_null(m);
    fprintf(m, "services=%zu\nhostname=%s\nlog_level=%s\nworkers=%u\n",
            cfg->nservices, str_text(cfg->hostname), levels[cfg->log_level],
            cfg->workers);
    for (i = 0; i < cfg->nservices; i++) {
        const struct service *s = &cfg->services[i];
        const char *n = s->name;

        fprintf(m, "%s.line=%d\n%s.listen=", n, s->line, n);
        for (j = 0; j < s->nlisten; j++)
            fprintf(m, "%s%s", j ? "," : "", s->listen[j].text);
        fprintf(m, "\n%s.backend_host=%s\n%s.backend_port=%s\n", n,
                str_text(s->backend_host), n, str_text(s->backend_port));
        fprintf(m, "%s.client_tls=%s\n%s.client_implicit_tls=%s\n", n,
                ctls[s->client_tls], n, bool_text(s->client_implicit_tls));
        fprintf(m, "%s.cert=%s\n%s.key=%s\n", n, str_text(s->cert), n,
                str_text(s->key));
        fprintf(m, "%s.client_plaintext_auth=%s\n", n,
                bool_text(s->client_plaintext_auth));
        fprintf(m, "%s.backend_tls=%s\n%s.backend_implicit_tls=%s\n", n,
                btls[s->backend_tls], n, bool_text(s->backend_implicit_tls));
        fprintf(m, "%s.backend_ca_file=%s\n%s.backend_verify_name=%s\n", n,
                str_text(s->backend_ca_file), n,
                str_text(s->backend_verify_name));
        fprintf(m, "%s.idle_timeout=%u\n%s.max_line_length=%u\n", n,
                s->idle_timeout, n, s->max_line_length);
    }
    assert_int_equal(fclose(m), 0);
    return buf;
}

/* has_line - whether text has want as a whole line. */
static bool has_line(const char *text, const char *want)
{
    size_t n = strlen(want);
    const char *p = text;

    while ((p = strstr(p, want)) != NULL) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
        p++;
    }
    return false;
}

static void test_ok_case(void **state)
{
    const struct ok_case *c = *state;
    char path[32], err[4096];
    struct config *cfg = NULL;
    char *text;
    size_t i;

    write_temp(path, c->text, strlen(c->text));
    if (config_load(path, &cfg, err, sizeof err) != 0) {
        unlink(path);
        fail_msg("case \"%s\": unexpected errors:\n%s", c->name, err);
    }
    unlink(path);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_non_null(cfg->hostname);
    assert_true(cfg->nservices > 0);
    text = dump(cfg);
    for (i = 0; c->want[i] != NULL; i++) {
        if (!has_line(text, c->want[i]))
            fail_msg("case \"%s\": no line \"%s\" in:\n%s", c->name,
                     c->want[i], text);
    }
    free(text);
    config_free(cfg);
}

static void test_err_case(void **state)
{
    const struct err_case *c = *state;
    char path[32], err[4096], prefix[64];
    struct config *cfg = (struct config *)&cfg;  /* must stay untouched */
    size_t len = c->len ? c->len : strlen(c->text), i, nwant = 0, ngot = 0;
    char *line, *save = NULL;

    write_temp(path, c->text, len);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), -1);
    unlink(path);
    assert_ptr_equal(cfg, (struct config *)&cfg);
    while (nwant < 8 && c->want[nwant].msg != NULL)
        nwant++;
    assert_true(strlen(err) > 0 && err[strlen(err) - 1] == '\n');
    for (i = 0; err[i] != '\0'; i++)
        ngot += err[i] == '\n';
    if (ngot != nwant)
        fail_msg("case \"%s\": %zu errors expected, got:\n%s", c->name,
                 nwant, err);
    for (i = 0, line = strtok_r(err, "\n", &save); line != NULL;
         i++, line = strtok_r(NULL, "\n", &save)) {
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, c->want[i].line);
        if (strncmp(line, prefix, strlen(prefix)) != 0 ||
            strstr(line + strlen(prefix), c->want[i].msg) == NULL)
            fail_msg("case \"%s\": error %zu is \"%s\", expected "
                     "\"%s...%s...\"", c->name, i, line, prefix,
                     c->want[i].msg);
    }
}

static void test_cannot_open(void **state)
{
    char err[256];
    struct config *cfg = NULL;

    (void)state;
    assert_int_equal(config_load("/nonexistent/dir/proxy.ini", &cfg, err,
                                 sizeof err), -1);
    assert_null(cfg);
    assert_string_equal(err, "/nonexistent/dir/proxy.ini:0: cannot open: "
                             "No such file or directory\n");
}

static void test_directory(void **state)
{
    char err[256];
    struct config *cfg = NULL;

    (void)state;
    assert_int_equal(config_load("/tmp", &cfg, err, sizeof err), -1);
    assert_null(cfg);
    assert_string_equal(err, "/tmp:0: read error: Is a directory\n");
}

/* The default hostname is the system's. */
static void test_default_hostname(void **state)
{
    static const char text[] = SVC;
    char path[32], err[1024], host[256];
    struct config *cfg = NULL;

    (void)state;
    assert_int_equal(gethostname(host, sizeof host), 0);
    write_temp(path, text, sizeof text - 1);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), 0);
    unlink(path);
    assert_string_equal(cfg->hostname, host);
    assert_int_equal(cfg->log_level, LOG_INFO);
    config_free(cfg);
}

/* Listen addresses are real socket addresses. */
static void test_listen_sockaddr(void **state)
{
    static const char text[] =
        "[in]\nlisten = 192.0.2.7:2525, [2001:db8::9]:465, *:25\n"
        "backend = h:25\nclient_tls = none\n";
    char path[32], err[1024];
    struct config *cfg = NULL;
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;
    struct in6_addr want6;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), 0);
    unlink(path);
    assert_int_equal(cfg->services[0].nlisten, 3);

    sin = (const struct sockaddr_in *)&cfg->services[0].listen[0].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 2525);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0xc0000207);
    assert_int_equal(cfg->services[0].listen[0].addr_len, sizeof *sin);

    sin6 = (const struct sockaddr_in6 *)&cfg->services[0].listen[1].addr;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 465);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::9", &want6), 1);
    assert_memory_equal(&sin6->sin6_addr, &want6, sizeof want6);
    assert_int_equal(cfg->services[0].listen[1].addr_len, sizeof *sin6);

    sin = (const struct sockaddr_in *)&cfg->services[0].listen[2].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 25);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    config_free(cfg);
}

/* A small error buffer is filled, cut, and stays NUL-terminated; no
 * buffer at all is fine too. */
static void test_small_err_buffer(void **state)
{
    static const char text[] = "[in]\nbogus1 = 1\nbogus2 = 2\nbogus3 = 3\n";
    char path[32], err[64];
    struct config *cfg = NULL;
    size_t sizes[] = { 1, 2, 10, 40, 64 }, i;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        memset(err, 'Z', sizeof err);
        assert_int_equal(config_load(path, &cfg, err, sizes[i]), -1);
        assert_null(cfg);
        assert_true(strlen(err) < sizes[i]);
        assert_int_equal(strncmp(err, path, strlen(err) < strlen(path)
                                                ? strlen(err)
                                                : strlen(path)), 0);
    }
    assert_int_equal(config_load(path, &cfg, NULL, 0), -1);
    assert_int_equal(config_load(path, &cfg, err, 0), -1);
    assert_null(cfg);
    unlink(path);
}

/* Many errors: only whole lines before the cut, never past the buffer. */
static void test_many_errors(void **state)
{
    char path[32], err[1000];
    struct config *cfg = NULL;
    char *text = NULL;
    size_t len = 0, i, lines = 0;
    FILE *m = open_memstream(&text, &len);

    (void)state;
    assert_non_null(m);
    fputs("[in]\n", m);
    for (i = 0; i < 500; i++)
        fprintf(m, "bogus%zu = 1\n", i);
    assert_int_equal(fclose(m), 0);
    write_temp(path, text, len);
    free(text);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), -1);
    unlink(path);
    assert_true(strlen(err) < sizeof err);
    for (i = 0; err[i] != '\0'; i++)
        lines += err[i] == '\n';
    assert_true(lines > 10);
    assert_non_null(strstr(err, ":2: unknown key \"bogus0\"\n"));
}

/* load_generated - config_load() on the text of gen(m); returns its
 * result and the errors in err. */
static int load_generated(void (*gen)(FILE *), char *err, size_t err_len)
{
    char path[32];
    struct config *cfg = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    int r;

    assert_non_null(m);
    gen(m);
    assert_int_equal(fclose(m), 0);
    write_temp(path, text, len);
    free(text);
    r = config_load(path, &cfg, err, err_len);
    unlink(path);
    if (r == 0)
        config_free(cfg);
    return r;
}

static void gen_services(FILE *m)
{
    int i;

    for (i = 0; i < 257; i++)
        fprintf(m, "[s%d]\nlisten = 127.0.0.1:%d\nbackend = h:25\n"
                   "client_tls = none\n", i, 1000 + i);
}

/* At most 256 services; the 257th header (line 1025) is refused. */
static void test_too_many_services(void **state)
{
    char err[1024];

    (void)state;
    assert_int_equal(load_generated(gen_services, err, sizeof err), -1);
    assert_non_null(strstr(err, ":1025: too many services (at most 256)\n"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
}

static void gen_listen(FILE *m)
{
    int i, j;

    /* 100 services of 12 addresses: the 86th passes 1024 */
    for (i = 0; i < 100; i++) {
        fprintf(m, "[s%d]\nbackend = h:25\nclient_tls = none\nlisten = ", i);
        for (j = 0; j < 12; j++)
            fprintf(m, "%s10.0.%d.%d:25", j ? "," : "", i, j);
        fprintf(m, "\n");
    }
}

/* At most 1024 listen addresses in all. */
static void test_too_many_listen(void **state)
{
    char err[8192];

    (void)state;
    assert_int_equal(load_generated(gen_listen, err, sizeof err), -1);
    /* service 85 (header on line 341) brings the total to 1032 */
    assert_true(strncmp(strchr(err, ':'), ":344: too many listen addresses "
                                          "(at most 1024 in all)\n", 47) == 0);
}

/* config_load_stream reads any stream and names it by path. */
static void test_stream(void **state)
{
    static char text[] = SVC "[proxy]\nhostname = s.example\n";
    char err[256];
    struct config *cfg = NULL;
    FILE *f = fmemopen(text, sizeof text - 1, "r");

    (void)state;
    assert_non_null(f);
    assert_int_equal(config_load_stream(f, "mem.ini", &cfg, err, sizeof err),
                     0);
    fclose(f);
    assert_string_equal(cfg->path, "mem.ini");
    assert_string_equal(cfg->hostname, "s.example");
    config_free(cfg);
    config_free(NULL);
}

int main(void)
{
    size_t nok = sizeof ok_cases / sizeof ok_cases[0];
    size_t nerr = sizeof err_cases / sizeof err_cases[0];
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_cannot_open),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_default_hostname),
        cmocka_unit_test(test_listen_sockaddr),
        cmocka_unit_test(test_small_err_buffer),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_too_many_services),
        cmocka_unit_test(test_too_many_listen),
        cmocka_unit_test(test_stream),
    };
    size_t nfixed = sizeof fixed / sizeof fixed[0], n = 0, i;
    struct CMUnitTest *tests = calloc(nok + nerr + nfixed, sizeof *tests);
    int failed;

    if (tests == NULL)
        return 1;
    for (i = 0; i < nok; i++) {
        tests[n].name = ok_cases[i].name;
        tests[n].test_func = test_ok_case;
        tests[n++].initial_state = (void *)&ok_cases[i];
    }
    for (i = 0; i < nerr; i++) {
        tests[n].name = err_cases[i].name;
        tests[n].test_func = test_err_case;
        tests[n++].initial_state = (void *)&err_cases[i];
    }
    for (i = 0; i < nfixed; i++)
        tests[n++] = fixed[i];
    failed = _cmocka_run_group_tests("config", tests, n, NULL, NULL);
    free(tests);
    return failed;
}
