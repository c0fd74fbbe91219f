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
#include <sys/stat.h>
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
    const char *want[40];  /* lines of the dump, NULL-terminated */
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
    { "transparent: no backend key; defaults; both modes; backend_mark",
      "[in]\nlisten = 127.0.0.1:2525\nclient_tls = none\n"
      "transparent = redirect\nbackend_mark = 4294967295\n"
      "transparent_destinations = 203.0.113.0/24, 2001:db8::/32\n"
      "[tp]\nlisten = 127.0.0.1:2526\nclient_tls = none\n"
      "transparent = TPROXY\ntransparent_source = client\n"
      "backend_tls = verify\nbackend_verify_name = mx.example.net\n"
      "[plain]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "backend_mark = 25\n",
      { "in.transparent=redirect", "in.backend_host=(null)",
        "in.backend_mark=4294967295", "in.transparent_destinations=2",
        "in.transparent_source=proxy", "in.backend_verify_name=(null)",
        "tp.transparent=tproxy", "tp.transparent_source=client",
        "tp.backend_tls=verify", "tp.backend_verify_name=mx.example.net",
        "plain.transparent=off", "plain.backend_mark=25",
        "plain.transparent_destinations=0", NULL } },
    { "mx: backends, port 25 by default; dane; the dns keys",
      "[proxy]\ndns_resolver = 192.0.2.53, 2001:db8::53@5353 ,198.51.100.1\n"
      "dns_trust_anchor = /etc/anchor.ds\ndns_timeout = 3\n"
      "[in]\nlisten = 127.0.0.1:2525\nbackend = mx:Example.com\n"
      "client_tls = none\nbackend_tls = dane-only\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = mx:mail.example.org:2525\n"
      "client_tls = none\nbackend_tls = DANE\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = relay.example.net:25\n"
      "client_tls = none\nbackend_tls = dane\n",
      { "dns_resolver=192.0.2.53, 2001:db8::53@5353 ,198.51.100.1",
        "dns_trust_anchor=/etc/anchor.ds", "dns_timeout=3",
        "in.backend_host=Example.com", "in.backend_port=25",
        "in.backend_mx=yes", "in.backend_tls=dane-only",
        "in.backend_verify_name=(null)",
        "b.backend_host=mail.example.org", "b.backend_port=2525",
        "b.backend_mx=yes", "b.backend_tls=dane",
        "c.backend_mx=no", "c.backend_verify_name=relay.example.net", NULL } },
    { "backend_tls = fingerprint: certificate and public key pins",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\nclient_tls = none\n"
      "backend_tls = fingerprint\nbackend_tls_fingerprints = "
      "SHA256:AB:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:"
      "00:00:00:00:00:00:00:00:00:00:CD\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "backend_tls = fingerprint\nbackend_tls_fingerprints = pubkey-sha256:"
      "0100000000000000000000000000000000000000000000000000000000000002,"
      "sha256:ff000000000000000000000000000000000000000000000000000000000000ee"
      "\n",
      { "in.backend_tls=fingerprint", "in.backend_pins=cert:ab..cd",
        "b.backend_pins=pubkey:01..02,cert:ff..ee", NULL } },
    { "dns defaults",
      SVC,
      { "dns_resolver=system", "dns_trust_anchor=/usr/share/dns/root.key",
        "dns_timeout=10", "in.backend_mx=no", NULL } },
    { "ehlo_pass: upper case, order kept; none by default",
      SVC "ehlo_pass = x-link2state, DELIVERBY,mt-priority\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n",
      { "in.ehlo_pass=X-LINK2STATE,DELIVERBY,MT-PRIORITY", "b.ehlo_pass=",
        NULL } },
    { "command_timeout follows idle_timeout unless given",
      SVC "idle_timeout = 5\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "idle_timeout = 5\ncommand_timeout = 60\n",
      { "in.idle_timeout=5", "in.command_timeout=5", "b.command_timeout=60",
        NULL } },
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
    { "workers auto: one per CPU", "[proxy]\nworkers = auto\n" SVC,
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
    /* ---- hardening keys (issue 3) ---- */
    { "hardening defaults", SVC,
      { "profiles=0", "in.ncerts=0", "in.certs=",
        "in.client_tls_min_protocol=0x303", "in.client_tls_ciphers=(null)",
        "in.client_tls_ciphersuites=(null)", "in.client_tls_groups=(null)",
        "in.client_tls_security_level=-1",
        "in.client_tls_session_tickets=yes",
        "in.backend_tls_min_protocol=0x303", "in.backend_tls_ciphers=(null)",
        "in.backend_tls_ciphersuites=(null)", "in.backend_tls_groups=(null)",
        "in.backend_tls_security_level=-1",
        "in.backend_tls_session_tickets=yes", "in.client_ca_file=(null)",
        "in.client_cert=none", "in.bare_newline=normalize",
        "in.trace_header=no", "in.backend_client_address=none",
        "in.client_proxy_protocol=no", "in.trusted_proxies=",
        "in.max_connections=1000", "in.max_connections_per_ip=50",
        "in.max_errors=10", "in.command_timeout=300",
        "in.tls_handshake_timeout=30", "in.min_data_rate=1024",
        "in.enforce=yes", "in.profiles=", NULL } },
    { "every hardening key",
      SVC_TLS
      "client_tls_min_protocol = TLSv1.3\n"
      "client_tls_ciphers = ECDHE+AESGCM:!aNULL:@SECLEVEL=2\n"
      "client_tls_ciphersuites = TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n"
      "client_tls_groups = X25519:P-256\n"
      "client_tls_security_level = 3\n"
      "client_tls_session_tickets = no\n"
      "backend_tls_min_protocol = TLSv1\n"
      "backend_tls_ciphers = DEFAULT:@SECLEVEL=0\n"
      "backend_tls_ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n"
      "backend_tls_groups = P-384\n"
      "backend_tls_security_level = 0\n"
      "backend_tls_session_tickets = off\n"
      "client_ca_file = /etc/ssl/clients.pem\n"
      "client_cert = require\n"
      "bare_newline = reject\n"
      "trace_header = yes\n"
      "backend_client_address = xclient\n"
      "client_proxy_protocol = yes\n"
      "trusted_proxies = 10.0.0.0/8, 2001:db8::/32\n"
      "max_connections = 20\n"
      "max_connections_per_ip = 0\n"
      "max_errors = 3\n"
      "command_timeout = 60\n"
      "tls_handshake_timeout = 10\n"
      "min_data_rate = 0\n"
      "enforce = no\n"
      "profiles = printers\n"
      "[profile printers]\nsources = 10.1.2.0/24\n",
      { "in.client_tls_min_protocol=0x304",
        "in.client_tls_ciphers=ECDHE+AESGCM:!aNULL:@SECLEVEL=2",
        "in.client_tls_ciphersuites=TLS_AES_256_GCM_SHA384:"
        "TLS_AES_128_GCM_SHA256",
        "in.client_tls_groups=X25519:P-256",
        "in.client_tls_security_level=3",
        "in.client_tls_session_tickets=no",
        "in.backend_tls_min_protocol=0x301",
        "in.backend_tls_ciphers=DEFAULT:@SECLEVEL=0",
        "in.backend_tls_ciphersuites=TLS_CHACHA20_POLY1305_SHA256",
        "in.backend_tls_groups=P-384", "in.backend_tls_security_level=0",
        "in.backend_tls_session_tickets=no",
        "in.client_ca_file=/etc/ssl/clients.pem", "in.client_cert=require",
        "in.bare_newline=reject", "in.trace_header=yes",
        "in.backend_client_address=xclient", "in.client_proxy_protocol=yes",
        "in.trusted_proxies=10.0.0.0/8,2001:db8::/32",
        "in.max_connections=20", "in.max_connections_per_ip=0",
        "in.max_errors=3", "in.command_timeout=60",
        "in.tls_handshake_timeout=10", "in.min_data_rate=0",
        "in.enforce=no", "in.profiles=printers", NULL } },
    { "TLS protocol names, any case",
      SVC "client_tls_min_protocol = tlsv1.1\n"
      "backend_tls_min_protocol = TLSV1.2\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "client_tls_min_protocol = TLSv1\nbackend_tls_min_protocol = tlsv1.3\n",
      { "in.client_tls_min_protocol=0x302",
        "in.backend_tls_min_protocol=0x303",
        "b.client_tls_min_protocol=0x301",
        "b.backend_tls_min_protocol=0x304", NULL } },
    { "security levels",
      SVC "client_tls_security_level = 5\n"
      "backend_tls_security_level = Default\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "client_tls_security_level = 0\nbackend_tls_security_level = 005\n",
      { "in.client_tls_security_level=5",
        "in.backend_tls_security_level=-1",
        "b.client_tls_security_level=0", "b.backend_tls_security_level=5",
        NULL } },
    { "session tickets on",
      SVC "client_tls_session_tickets = yes\n"
      "backend_tls_session_tickets = TRUE\n",
      { "in.client_tls_session_tickets=yes",
        "in.backend_tls_session_tickets=yes", NULL } },
    { "cert and key lists",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "cert = /rsa.pem, /ec.pem ,\t/ed.pem\n"
      "key = /rsa.key,/ec.key,  /ed.key\n",
      { "in.ncerts=3",
        "in.certs=/rsa.pem:/rsa.key,/ec.pem:/ec.key,/ed.pem:/ed.key",
        "in.cert=/rsa.pem", "in.key=/rsa.key", NULL } },
    { "one cert and key is a list of one",
      SVC_TLS, { "in.ncerts=1", "in.certs=/c.pem:/k.pem", "in.cert=/c.pem",
                 "in.key=/k.pem", NULL } },
    { "cert and key with client_tls none",
      SVC "cert = /a.pem,/b.pem\nkey = /a.key,/b.key\n",
      { "in.ncerts=2", "in.cert=/a.pem", "in.key=/a.key", NULL } },
    { "client_cert ask and none",
      SVC_TLS "client_cert = Ask\nclient_ca_file = /ca.pem\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "client_cert = none\nclient_ca_file = /ca.pem\n",
      { "in.client_cert=ask", "in.client_ca_file=/ca.pem",
        "b.client_cert=none", "b.client_ca_file=/ca.pem", NULL } },
    { "client_cert with implicit TLS",
      SVC_TLS "client_tls = none\nclient_implicit_tls = no\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\ncert = /c\nkey = /k\n"
      "client_implicit_tls = yes\nclient_cert = require\n"
      "client_ca_file = /ca\n",
      { "b.client_cert=require", "b.client_implicit_tls=yes", NULL } },
    { "backend_client_address values, bare_newline normalize",
      SVC "backend_client_address = proxy-v1\nbare_newline = Normalize\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "backend_client_address = PROXY-V2\nbare_newline = REJECT\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "backend_client_address = none\n",
      { "in.backend_client_address=proxy-v1", "in.bare_newline=normalize",
        "b.backend_client_address=proxy-v2", "b.bare_newline=reject",
        "c.backend_client_address=none", NULL } },
    { "trusted_proxies: IPv4 and IPv6 ranges",
      SVC "client_proxy_protocol = yes\ntrusted_proxies = 10.0.0.0/8, "
      "192.0.2.7, 0.0.0.0/0, ::/0, 2001:DB8::/32,::1 ,\tfe80::/10, "
      "255.255.255.255/32, 1.2.3.4/32, ::ffff:0:0/96, 2001:db8::1/128\n",
      { "in.client_proxy_protocol=yes",
        "in.trusted_proxies=10.0.0.0/8,192.0.2.7/32,0.0.0.0/0,::/0,"
        "2001:db8::/32,::1/128,fe80::/10,255.255.255.255/32,1.2.3.4/32,"
        "::ffff:0.0.0.0/96,2001:db8::1/128", NULL } },
    { "trusted_proxies without client_proxy_protocol",
      SVC "trusted_proxies = 127.0.0.0/8\n",
      { "in.client_proxy_protocol=no", "in.trusted_proxies=127.0.0.0/8",
        NULL } },
    { "prefix edge cases",
      SVC "trusted_proxies = 128.0.0.0/1, 8000::/1, 10.0.0.0/08, "
      "10.0.0.0/7, 192.168.0.0/16, 2001:db8:0:ff00::/56\n",
      { "in.trusted_proxies=128.0.0.0/1,8000::/1,10.0.0.0/8,10.0.0.0/7,"
        "192.168.0.0/16,2001:db8:0:ff00::/56", NULL } },
    { "lowest limits",
      SVC "max_connections = 1\nmax_connections_per_ip = 0\n"
      "max_errors = 1\ncommand_timeout = 1\ntls_handshake_timeout = 1\n"
      "min_data_rate = 0\n",
      { "in.max_connections=1", "in.max_connections_per_ip=0",
        "in.max_errors=1", "in.command_timeout=1",
        "in.tls_handshake_timeout=1", "in.min_data_rate=0", NULL } },
    { "highest limits",
      SVC "max_connections = 1000000\nmax_connections_per_ip = 1000000\n"
      "max_errors = 1000\ncommand_timeout = 86400\n"
      "tls_handshake_timeout = 3600\nmin_data_rate = 1000000000\n",
      { "in.max_connections=1000000", "in.max_connections_per_ip=1000000",
        "in.max_errors=1000", "in.command_timeout=86400",
        "in.tls_handshake_timeout=3600", "in.min_data_rate=1000000000",
        NULL } },
    { "enforce and trace_header booleans",
      SVC "enforce = off\ntrace_header = 1\n",
      { "in.enforce=no", "in.trace_header=yes", NULL } },
    { "empty hardening values keep the defaults",
      SVC "trusted_proxies =\nprofiles =\ncert =\nkey=\n"
      "client_tls_security_level =\nclient_tls_min_protocol =\n"
      "client_tls_ciphers =\nmax_connections =\n",
      { "in.trusted_proxies=", "in.profiles=", "in.ncerts=0",
        "in.client_tls_security_level=-1",
        "in.client_tls_min_protocol=0x303", "in.client_tls_ciphers=(null)",
        "in.max_connections=1000", NULL } },
    { "profile after the service, order kept",
      SVC "profiles = old, printers\n"
      "[profile printers]\nsources = 10.1.2.0/24\nclient_tls = none\n"
      "[profile old]\nsources = 192.0.2.0/28, 2001:db8:1::/48\n"
      "client_tls_min_protocol = TLSv1\n",
      { "profiles=2", "in.profiles=old,printers",
        "profile:printers.line=6", "profile:printers.sources=10.1.2.0/24",
        "profile:printers.client_tls=none", "profile:old.line=9",
        "profile:old.sources=192.0.2.0/28,2001:db8:1::/48",
        "profile:old.min_protocol=0x301", "profile:old.client_tls=unset",
        NULL } },
    { "profile before the service, names in any case",
      "[Profile Printers]\nsources = 10.1.2.0/24\n"
      "[ profile b ]\nsources = ::1\n"
      SVC "profiles = printers, B\n",
      { "profile:Printers.line=1", "profile:b.line=3",
        "in.profiles=Printers,b", "in.line=5", NULL } },
    { "two services share a profile",
      "[profile lab]\nsources = 10.9.0.0/16\nclient_plaintext_auth = yes\n"
      SVC "profiles = lab\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "profiles = lab\n",
      { "profiles=1", "in.profiles=lab", "b.profiles=lab",
        "profile:lab.client_plaintext_auth=yes", NULL } },
    { "every profile key",
      SVC_TLS "profiles = p\n"
      "[profile p]\n"
      "sources = 10.1.2.0/24, 10.1.3.7, fd00::/8\n"
      "client_tls = encrypt\n"
      "client_plaintext_auth = no\n"
      "client_tls_min_protocol = TLSv1.1\n"
      "client_tls_ciphers = DEFAULT:@SECLEVEL=0\n"
      "client_tls_ciphersuites = TLS_AES_128_GCM_SHA256\n"
      "client_tls_security_level = 0\n",
      { "profile:p.line=7",
        "profile:p.sources=10.1.2.0/24,10.1.3.7/32,fd00::/8",
        "profile:p.client_tls=encrypt", "profile:p.client_plaintext_auth=no",
        "profile:p.min_protocol=0x302",
        "profile:p.ciphers=DEFAULT:@SECLEVEL=0",
        "profile:p.ciphersuites=TLS_AES_128_GCM_SHA256",
        "profile:p.security_level=0", NULL } },
    { "profile with only sources sets nothing",
      SVC "profiles = p\n[profile p]\nsources = 0.0.0.0/0\n"
      "client_tls =\nclient_tls_security_level =\n",
      { "profile:p.client_tls=unset",
        "profile:p.client_plaintext_auth=unset",
        "profile:p.min_protocol=unset", "profile:p.ciphers=(null)",
        "profile:p.ciphersuites=(null)", "profile:p.security_level=unset",
        NULL } },
    { "profile security level default",
      SVC "[profile p]\nsources = ::/0\nclient_tls_security_level = default\n",
      { "profile:p.security_level=-1", NULL } },
    { "unused profile is fine",
      SVC "[profile spare]\nsources = 10.0.0.0/8\n",
      { "profiles=1", "in.profiles=", "profile:spare.line=5", NULL } },
    { "profile turns TLS on where cert and key are given",
      SVC "cert = /c\nkey = /k\nprofiles = p\n"
      "[profile p]\nsources = 10.0.0.0/8\nclient_tls = may\n",
      { "in.client_tls=none", "profile:p.client_tls=may", NULL } },
    { "a profile and a service of the same name; profile-like names",
      SVC "profiles = in\n[profile in]\nsources = 10.0.0.0/8\n"
      "[profiles]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "[profile.x]\nlisten = 127.0.0.1:2527\nbackend = h:25\n"
      "client_tls = none\n",
      { "in.profiles=in", "profiles.line=8", "profile.x.line=12",
        "profile:in.line=6", NULL } },
};

static const struct err_case err_cases[] = {
    { "transparent: what needs a name or a domain is refused",
      "[a]\nlisten = 127.0.0.1:2525\nbackend = h:25\nclient_tls = none\n"
      "transparent = redirect\n"
      "[b]\nlisten = 127.0.0.1:2526\nclient_tls = none\n"
      "transparent = redirect\nbackend_tls = verify\n"
      "[c]\nlisten = 127.0.0.1:2527\nclient_tls = none\n"
      "transparent = tproxy\nbackend_tls = dane\n"
      "[d]\nlisten = 127.0.0.1:2528\nclient_tls = none\n"
      "transparent = redirect\nbackend_tls = sts\n"
      "[e]\nlisten = 127.0.0.1:2529\nclient_tls = none\n"
      "transparent = redirect\ntransparent_source = client\n"
      "[f]\nlisten = 127.0.0.1:2530\nbackend = h:25\nclient_tls = none\n"
      "transparent_destinations = 192.0.2.0/24\n",
      0,
      { { 3, "service [a]: backend cannot be given with transparent" },
        { 10, "service [b]: backend_tls = verify with transparent needs "
              "backend_verify_name" },
        { 15, "service [c]: backend_tls = dane cannot be used with "
              "transparent" },
        { 20, "service [d]: backend_tls = sts cannot be used with "
              "transparent" },
        { 25, "service [e]: transparent_source = client needs "
              "transparent = tproxy" },
        { 30, "service [f]: transparent_destinations needs transparent" },
        { 0, NULL } } },
    { "transparent: a bad value; no backend without it; PROXY headers",
      "[g]\nlisten = 127.0.0.1:2531\nclient_tls = none\n"
      "transparent = dnat\nbackend_mark = -1\n"
      "[h]\nlisten = 127.0.0.1:2532\nclient_tls = none\n"
      "transparent = redirect\nclient_proxy_protocol = yes\n"
      "trusted_proxies = 192.0.2.1\n"
      "[i]\nlisten = 127.0.0.1:2533\nclient_tls = none\n"
      "transparent = tproxy\nbackend_health = connect\n",
      0,
      { { 4, "transparent: \"dnat\" is not one of off, redirect, tproxy" },
        { 5, "backend_mark: \"-1\" is not a number" },
        { 10, "service [h]: client_proxy_protocol cannot be used with "
              "transparent" },
        { 16, "service [i]: backend_health cannot be used with "
              "transparent" },
        { 0, NULL } } },
    { "mx: needs a domain; dane needs a name; dns_resolver numeric",
      "[proxy]\ndns_resolver = ns1.example.com\n"
      "[a]\nlisten = 127.0.0.1:2525\nbackend = mx:192.0.2.1\n"
      "client_tls = none\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = mx:localhost\n"
      "client_tls = none\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = 192.0.2.1:25\n"
      "client_tls = none\nbackend_tls = dane\n",
      0,
      { { 2, "dns_resolver: \"ns1.example.com\" is not a numeric address" },
        { 5, "backend: mx:\"192.0.2.1\": not a mail domain" },
        { 9, "backend: mx:\"localhost\": not a mail domain" },
        { 15, "service [c]: backend_tls = dane needs a backend host name" },
        { 0, NULL } } },
    { "fingerprints: syntax, and only with backend_tls = fingerprint",
      "[a]\nlisten = 127.0.0.1:2525\nbackend = h:25\nclient_tls = none\n"
      "backend_tls = fingerprint\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "backend_tls_fingerprints = sha256:" 
      "0000000000000000000000000000000000000000000000000000000000000000\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "backend_tls_fingerprints = md5:00\n"
      "[d]\nlisten = 127.0.0.1:2528\nbackend = h:25\nclient_tls = none\n"
      "backend_tls_fingerprints = sha256:0011\n",
      0,
      { { 15, "backend_tls_fingerprints: \"md5:00\": expected sha256:HEX" },
        { 20, "backend_tls_fingerprints: \"sha256:0011\": a SHA-256 digest "
              "is 64 hex digits" },
        { 5, "service [a]: backend_tls = fingerprint needs "
             "backend_tls_fingerprints" },
        { 10, "service [b]: backend_tls_fingerprints needs backend_tls = "
              "fingerprint" },
        { 0, NULL } } },
    { "dns_resolver: bad port, empty item, dns_timeout range",
      "[proxy]\ndns_resolver = 192.0.2.1@0\n" SVC
      "[p2]\nlisten = 127.0.0.1:2530\nbackend = h:25\nclient_tls = none\n",
      0,
      { { 2, "dns_resolver: \"0\": bad port" }, { 0, NULL } } },
    { "ehlo_pass: what the proxy never passes, bad and repeated keywords",
      SVC "ehlo_pass = STARTTLS\nehlo_pass = x\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "ehlo_pass = xclient\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "ehlo_pass = X_Y\n"
      "[d]\nlisten = 127.0.0.1:2528\nbackend = h:25\nclient_tls = none\n"
      "ehlo_pass = A, a\n"
      "[e]\nlisten = 127.0.0.1:2529\nbackend = h:25\nclient_tls = none\n"
      "ehlo_pass = auth, requiretls, XFORWARD\n",
      0,
      { { 5, "ehlo_pass: STARTTLS cannot be passed: STARTTLS is the proxy's" },
        { 6, "ehlo_pass given twice" },
        { 11, "XCLIENT cannot be passed: XCLIENT would let a client" },
        { 16, "\"X_Y\" is not an EHLO keyword" },
        { 21, "\"a\" listed twice" },
        { 26, "AUTH cannot be passed: AUTH follows its own rule" },
        { 0, NULL } } },
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
    /* ---- hardening keys (issue 3) ---- */
    { "bad min protocol", SVC "client_tls_min_protocol = SSLv3\n", 0,
      { { 5, "client_tls_min_protocol: \"SSLv3\" is not one of TLSv1, "
             "TLSv1.1, TLSv1.2, TLSv1.3" } } },
    { "bad backend min protocol", SVC "backend_tls_min_protocol = TLSv1.4\n"
      "client_tls_min_protocol = 1.2\n", 0,
      { { 5, "backend_tls_min_protocol: \"TLSv1.4\" is not one of" },
        { 6, "client_tls_min_protocol: \"1.2\" is not one of" } } },
    { "cipher list with a blank", SVC "client_tls_ciphers = HIGH !aNULL\n",
      0, { { 5, "client_tls_ciphers: \"HIGH !aNULL\" is not an OpenSSL list "
                "(printable ASCII without blanks" } } },
    { "suites with a tab, groups not ASCII",
      SVC "backend_tls_ciphersuites = A\tB\n"
      "client_tls_groups = X25519:P\xc3\xa9\n"
      "backend_tls_groups = a,b c\n"
      "client_tls_ciphersuites = x y\n"
      "backend_tls_ciphers = \"x y\"\n", 0,
      { { 5, "backend_tls_ciphersuites: \"A\\x09B\" is not an OpenSSL list" },
        { 6, "client_tls_groups: \"X25519:P\\xc3\\xa9\" is not an OpenSSL "
             "list" },
        { 7, "backend_tls_groups: \"a,b c\" is not" },
        { 8, "client_tls_ciphersuites: \"x y\" is not" },
        { 9, "backend_tls_ciphers: \"\\\"x y\\\"\" is not" } } },
    { "security level out of range", SVC "client_tls_security_level = 6\n"
      "backend_tls_security_level = 99999999999\n", 0,
      { { 5, "client_tls_security_level: \"6\" is out of range (0..5)" },
        { 6, "backend_tls_security_level: \"99999999999\" is out of range "
             "(0..5)" } } },
    { "security level not a number", SVC "client_tls_security_level = -1\n"
      "backend_tls_security_level = high\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "client_tls_security_level = 2x\n", 0,
      { { 5, "client_tls_security_level: \"-1\" is not a number (0..5) or "
             "default" },
        { 6, "backend_tls_security_level: \"high\" is not a number (0..5) "
             "or default" },
        { 11, "client_tls_security_level: \"2x\" is not a number" } } },
    { "bad session tickets", SVC "client_tls_session_tickets = maybe\n"
      "backend_tls_session_tickets = 2\n", 0,
      { { 5, "client_tls_session_tickets: \"maybe\" is not yes or no" },
        { 6, "backend_tls_session_tickets: \"2\" is not yes or no" } } },
    { "bad client_cert", SVC_TLS "client_cert = optional\n", 0,
      { { 6, "client_cert: \"optional\" is not one of none, ask, "
             "require" } } },
    { "client_cert ask needs client_ca_file", SVC_TLS "client_cert = ask\n",
      0, { { 1, "service [in]: client_cert = ask needs client_ca_file" } } },
    { "client_cert require without TLS",
      SVC "client_cert = require\nclient_ca_file = /ca\n", 0,
      { { 1, "service [in]: client_cert = require needs TLS, but "
             "client_tls = none" } } },
    { "client_cert ask, no CA, no TLS", SVC "client_cert = ask\n", 0,
      { { 1, "service [in]: client_cert = ask needs client_ca_file" },
        { 1, "service [in]: client_cert = ask needs TLS" } } },
    { "bad bare_newline", SVC "bare_newline = strip\n", 0,
      { { 5, "bare_newline: \"strip\" is not one of normalize, reject" } } },
    { "bad trace_header", SVC "trace_header = always\n", 0,
      { { 5, "trace_header: \"always\" is not yes or no" } } },
    { "bad backend_client_address", SVC "backend_client_address = proxy\n", 0,
      { { 5, "backend_client_address: \"proxy\" is not one of none, "
             "proxy-v1, proxy-v2, xclient" } } },
    { "bad client_proxy_protocol", SVC "client_proxy_protocol = v2\n", 0,
      { { 5, "client_proxy_protocol: \"v2\" is not yes or no" } } },
    { "client_proxy_protocol needs trusted_proxies",
      SVC "client_proxy_protocol = yes\n", 0,
      { { 1, "service [in]: client_proxy_protocol needs trusted_proxies" } } },
    { "client_proxy_protocol with empty trusted_proxies",
      SVC "client_proxy_protocol = yes\ntrusted_proxies =\n", 0,
      { { 1, "client_proxy_protocol needs trusted_proxies" } } },
    { "a bad trusted_proxies is reported once",
      SVC "client_proxy_protocol = yes\ntrusted_proxies = 10.0.0.0/33\n", 0,
      { { 6, "trusted_proxies: \"10.0.0.0/33\": prefix \"33\" is out of "
             "range (0..32)" } } },
    { "host bits set, IPv4", SVC "trusted_proxies = 10.1.2.3/24\n", 0,
      { { 5, "trusted_proxies: host bits set in 10.1.2.3/24" } } },
    { "host bits set, IPv4 /0 and /31",
      SVC "trusted_proxies = 0.0.0.1/0\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/8, 192.0.2.1/31\n", 0,
      { { 5, "trusted_proxies: host bits set in 0.0.0.1/0" },
        { 10, "trusted_proxies: host bits set in 192.0.2.1/31" } } },
    { "host bits set, IPv6", SVC "trusted_proxies = 2001:db8::1/32\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = ::1/0\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 2001:db8:0:ff80::/56\n", 0,
      { { 5, "trusted_proxies: host bits set in 2001:db8::1/32" },
        { 10, "trusted_proxies: host bits set in ::1/0" },
        { 15, "trusted_proxies: host bits set in 2001:db8:0:ff80::/56" } } },
    { "prefix too long, IPv6", SVC "trusted_proxies = ::/129\n", 0,
      { { 5, "trusted_proxies: \"::/129\": prefix \"129\" is out of range "
             "(0..128)" } } },
    { "bad prefixes", SVC "trusted_proxies = 10.0.0.0/-1\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/8/8\n"
      "[d]\nlisten = 127.0.0.1:2528\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/ 8\n"
      "[e]\nlisten = 127.0.0.1:2529\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/0x8\n", 0,
      { { 5, "trusted_proxies: \"10.0.0.0/-1\": prefix \"-1\" is not a "
             "number" },
        { 10, "trusted_proxies: \"10.0.0.0/\": prefix \"\" is not a "
              "number" },
        { 15, "prefix \"8/8\" is not a number" },
        { 20, "prefix \" 8\" is not a number" },
        { 25, "prefix \"0x8\" is not a number" } } },
    { "CIDR garbage", SVC "trusted_proxies = localhost\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = [::1]\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 1.2.3/24\n"
      "[d]\nlisten = 127.0.0.1:2528\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = /8\n"
      "[e]\nlisten = 127.0.0.1:2529\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 010.0.0.0/8\n"
      "[f]\nlisten = 127.0.0.1:2530\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 1:2:3:4:5:6:7:8:9/128\n", 0,
      { { 5, "trusted_proxies: \"localhost\" is not an IPv4 or IPv6 address "
             "(write a.b.c.d/n or x::y/n, without brackets)" },
        { 10, "trusted_proxies: \"[::1]\" is not an IPv4 or IPv6" },
        { 15, "trusted_proxies: \"1.2.3/24\" is not an IPv4 or IPv6" },
        { 20, "trusted_proxies: \"/8\" is not an IPv4 or IPv6" },
        { 25, "trusted_proxies: \"010.0.0.0/8\" is not an IPv4 or IPv6" },
        { 30, "trusted_proxies: \"1:2:3:4:5:6:7:8:9/128\" is not an" } } },
    { "CIDR list: empty item, repeated range",
      SVC "trusted_proxies = 10.0.0.0/8,,::1\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = 10.0.0.0/8, ::1, 10.0.0.0/08\n"
      "[c]\nlisten = 127.0.0.1:2527\nbackend = h:25\nclient_tls = none\n"
      "trusted_proxies = ::1,\n", 0,
      { { 5, "trusted_proxies: empty address in the list" },
        { 10, "trusted_proxies: \"10.0.0.0/08\" given twice" },
        { 15, "trusted_proxies: empty address in the list" } } },
    { "limits below range",
      SVC "max_connections = 0\nmax_errors = 0\ncommand_timeout = 0\n"
      "tls_handshake_timeout = 0\n", 0,
      { { 5, "max_connections: \"0\" is out of range (1..1000000)" },
        { 6, "max_errors: \"0\" is out of range (1..1000)" },
        { 7, "command_timeout: \"0\" is out of range (1..86400)" },
        { 8, "tls_handshake_timeout: \"0\" is out of range (1..3600)" } } },
    { "limits above range",
      SVC "max_connections = 1000001\nmax_connections_per_ip = 1000001\n"
      "max_errors = 1001\ncommand_timeout = 86401\n"
      "tls_handshake_timeout = 3601\nmin_data_rate = 1000000001\n", 0,
      { { 5, "max_connections: \"1000001\" is out of range (1..1000000)" },
        { 6, "max_connections_per_ip: \"1000001\" is out of range "
             "(0..1000000)" },
        { 7, "max_errors: \"1001\" is out of range (1..1000)" },
        { 8, "command_timeout: \"86401\" is out of range (1..86400)" },
        { 9, "tls_handshake_timeout: \"3601\" is out of range (1..3600)" },
        { 10, "min_data_rate: \"1000000001\" is out of range "
              "(0..1000000000)" } } },
    { "limits not numbers",
      SVC "max_connections_per_ip = -1\nmin_data_rate = 1k\n"
      "enforce = maybe\n", 0,
      { { 5, "max_connections_per_ip: \"-1\" is not a number" },
        { 6, "min_data_rate: \"1k\" is not a number" },
        { 7, "enforce: \"maybe\" is not yes or no" } } },
    { "more certs than keys",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "cert = /rsa.pem, /ec.pem\nkey = /rsa.key\n", 0,
      { { 1, "service [in]: cert lists 2 files but key lists 1" } } },
    { "more keys than certs",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "key = /a.key, /b.key, /c.key\ncert = /a.pem\n", 0,
      { { 1, "service [in]: cert lists 1 file but key lists 3" } } },
    { "cert list mismatch with client_tls none",
      SVC "cert = /a,/b,/c\nkey = /a,/b\n", 0,
      { { 1, "service [in]: cert lists 3 files but key lists 2" } } },
    { "cert without key, key without cert, client_tls none",
      SVC "cert = /a\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "key = /a,/b\n", 0,
      { { 1, "service [in]: cert is given without key" },
        { 6, "service [b]: key is given without cert" } } },
    { "a bad client_tls hides a missing key",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\nclient_tls = off\n"
      "cert = /c\n", 0,
      { { 4, "client_tls: \"off\" is not one of" } } },
    { "empty path in a cert list is reported once",
      "[in]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
      "cert = /a.pem,,/b.pem\nkey = /a.key,\n", 0,
      { { 4, "cert: empty path in the list" },
        { 5, "key: empty path in the list" } } },
    { "cert given twice", SVC_TLS "cert = /d.pem\n", 0,
      { { 6, "cert given twice (first on line 4)" } } },
    { "unknown profile", SVC "profiles = a, nope\n[profile a]\n"
      "sources = ::1\n", 0,
      { { 5, "profiles: no section [profile nope]" } } },
    { "every unknown profile is named", SVC "profiles = x, y\n", 0,
      { { 5, "profiles: no section [profile x]" },
        { 5, "profiles: no section [profile y]" } } },
    { "profile listed twice", SVC "profiles = a, b, A\n"
      "[profile a]\nsources = ::1\n[profile b]\nsources = ::2\n", 0,
      { { 5, "profiles: \"A\" listed twice" } } },
    { "bad profile names in the list", SVC "profiles = a b\n"
      "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
      "profiles = a,,b\n", 0,
      { { 5, "profiles: \"a b\" is not a profile name" },
        { 10, "profiles: empty name in the list" } } },
    { "profile without a name", SVC "[profile]\nsources = ::1\n", 0,
      { { 5, "section [profile] needs a name: [profile NAME]" } } },
    { "profile names with bad blanks",
      SVC "[profile  x]\n[profile\tx]\n[profile x y]\n[PROFILE x!]\n", 0,
      { { 5, "bad section name \"profile  x\" (expected \"profile NAME\"" },
        { 6, "bad section name \"profile\\x09x\"" },
        { 7, "bad section name \"profile x y\"" },
        { 8, "bad section name \"PROFILE x!\"" } } },
    { "profile name too long",
      SVC "[profile "
      "a123456789a123456789a123456789a123456789a123456789a123456789abcde]\n",
      0, { { 5, "bad section name \"profile a1234" } } },
    { "profile given twice, its keys ignored",
      SVC "[profile p]\nsources = ::1\n[profile P]\nsources = x\nbogus = 1\n",
      0, { { 7, "section [profile P] given twice (first on line 5)" } } },
    { "profile needs sources",
      SVC "profiles = p\n[profile p]\nclient_plaintext_auth = yes\n", 0,
      { { 6, "profile [p]: sources is required" } } },
    { "profile with empty sources",
      SVC "[profile p]\nsources =\n", 0,
      { { 5, "profile [p]: sources is required" } } },
    { "a bad sources is reported once",
      SVC "[profile p]\nsources = 10.1.2.3/24\n", 0,
      { { 6, "sources: host bits set in 10.1.2.3/24" } } },
    { "service key in a profile",
      SVC "[profile p]\nsources = ::1\nlisten = 127.0.0.1:25\n"
      "client_cert = ask\ncolour = red\nlog_level = info\n"
      "sources = ::2\n", 0,
      { { 7, "key listen belongs in a service section, not in a profile" },
        { 8, "key client_cert belongs in a service section, not in a "
             "profile" },
        { 9, "unknown key \"colour\"" },
        { 10, "key log_level belongs in [proxy], not in a profile" },
        { 11, "sources given twice (first on line 6)" } } },
    /* sources is a key of services (who may connect) and of profiles
     * (whom the profile is for), never of [proxy] */
    { "sources in [proxy]",
      "[proxy]\nsources = ::1\n" SVC "sources = ::1\n", 0,
      { { 2, "key sources belongs in a service section, not [proxy]" } } },
    { "bad values in a profile",
      SVC "[profile p]\nsources = ::1\nclient_tls = always\n"
      "client_plaintext_auth = perhaps\nclient_tls_min_protocol = SSLv2\n"
      "client_tls_ciphers = a b\nclient_tls_ciphersuites = \xff\n"
      "client_tls_security_level = 9\n", 0,
      { { 7, "client_tls: \"always\" is not one of none, may, encrypt" },
        { 8, "client_plaintext_auth: \"perhaps\" is not yes or no" },
        { 9, "client_tls_min_protocol: \"SSLv2\" is not one of" },
        { 10, "client_tls_ciphers: \"a b\" is not an OpenSSL list" },
        { 11, "client_tls_ciphersuites: \"\\xff\" is not an OpenSSL list" },
        { 12, "client_tls_security_level: \"9\" is out of range (0..5)" } } },
    { "profile turns TLS on without cert",
      SVC "profiles = p\n[profile p]\nsources = 10.0.0.0/8\n"
      "client_tls = encrypt\n", 0,
      { { 1, "service [in]: profile [p] sets client_tls = encrypt, which "
             "needs cert and key" } } },
    { "profile turns TLS off under implicit TLS",
      SVC_TLS "client_implicit_tls = yes\nprofiles = p\n"
      "[profile p]\nsources = 10.0.0.0/8\nclient_tls = none\n", 0,
      { { 1, "service [in]: profile [p] sets client_tls = none, but the "
             "service has client_implicit_tls = yes" } } },
    { "a section named profile is a profile", "[profile]\n"
      "listen = 127.0.0.1:2525\nbackend = h:25\nclient_tls = none\n", 0,
      { { 1, "section [profile] needs a name" },
        { 0, "no service defined" } } },
    { "every error is reported, profiles too",
      "[profile a]\n"                 /* 1 */
      "sources = 10.0.0.1/8\n"        /* 2 */
      "[in]\n"                        /* 3 */
      "listen = 127.0.0.1:2525\n"
      "backend = h:25\n"
      "client_tls = none\n"
      "client_cert = ask\n"
      "profiles = a, b\n"             /* 8 */
      "max_errors = 0\n"              /* 9 */
      "[profile c]\n"                 /* 10 */
      "[profile a]\n",                /* 11 */
      0,
      { { 2, "sources: host bits set in 10.0.0.1/8" },
        { 9, "max_errors: \"0\" is out of range" },
        { 11, "section [profile a] given twice (first on line 1)" },
        { 10, "profile [c]: sources is required" },
        { 3, "service [in]: client_cert = ask needs client_ca_file" },
        { 3, "service [in]: client_cert = ask needs TLS" },
        { 8, "profiles: no section [profile b]" } } },
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

/* dump_cidrs - list as "10.0.0.0/8,::1/128". */
static void dump_cidrs(FILE *m, const struct cidr *list, size_t n)
{
    char text[INET6_ADDRSTRLEN];
    size_t i;

    for (i = 0; i < n; i++) {
        const void *a =
            list[i].addr.ss_family == AF_INET
                ? (const void *)&((const struct sockaddr_in *)&list[i].addr)
                      ->sin_addr
                : (const void *)&((const struct sockaddr_in6 *)&list[i].addr)
                      ->sin6_addr;

        assert_non_null(inet_ntop(list[i].addr.ss_family, a, text,
                                  sizeof text));
        fprintf(m, "%s%s/%u", i ? "," : "", text, list[i].prefix);
    }
    fprintf(m, "\n");
}

/* dump_knobs - the TLS settings of one leg, keys "<n>.<leg>_tls_...". */
static void dump_knobs(FILE *m, const char *n, const char *leg,
                       const struct tls_knobs *k)
{
    fprintf(m, "%s.%s_tls_min_protocol=0x%x\n", n, leg, k->min_protocol);
    fprintf(m, "%s.%s_tls_ciphers=%s\n", n, leg, str_text(k->ciphers));
    fprintf(m, "%s.%s_tls_ciphersuites=%s\n", n, leg,
            str_text(k->ciphersuites));
    fprintf(m, "%s.%s_tls_groups=%s\n", n, leg, str_text(k->groups));
    fprintf(m, "%s.%s_tls_security_level=%d\n", n, leg, k->security_level);
    fprintf(m, "%s.%s_tls_session_tickets=%s\n", n, leg,
            bool_text(k->session_tickets));
}

/* dump_profile - one [profile NAME], keys "profile:NAME.x"; a key that
 * was not given is "unset". */
static void dump_profile(FILE *m, const struct profile *p)
{
    static const char *const ctls[] = { "none", "may", "encrypt" };
    const char *n = p->name;

    fprintf(m, "profile:%s.line=%d\nprofile:%s.sources=", n, p->line, n);
    dump_cidrs(m, p->sources, p->nsources);
    fprintf(m, "profile:%s.client_tls=%s\n", n,
            p->has_client_tls ? ctls[p->client_tls] : "unset");
    fprintf(m, "profile:%s.client_plaintext_auth=%s\n", n,
            p->has_client_plaintext_auth
                ? bool_text(p->client_plaintext_auth) : "unset");
    if (p->has_min_protocol)
        fprintf(m, "profile:%s.min_protocol=0x%x\n", n, p->min_protocol);
    else
        fprintf(m, "profile:%s.min_protocol=unset\n", n);
    fprintf(m, "profile:%s.ciphers=%s\nprofile:%s.ciphersuites=%s\n", n,
            str_text(p->ciphers), n, str_text(p->ciphersuites));
    if (p->has_security_level)
        fprintf(m, "profile:%s.security_level=%d\n", n, p->security_level);
    else
        fprintf(m, "profile:%s.security_level=unset\n", n);
}

/* dump_hardening - the issue 3 fields of service s. */
static void dump_hardening(FILE *m, const struct service *s)
{
    static const char *const ccert[] = { "none", "ask", "require" };
    static const char *const bare[] = { "normalize", "reject" };
    static const char *const addr[] = { "none", "proxy-v1", "proxy-v2",
                                        "xclient" };
    const char *n = s->name;
    size_t j;

    fprintf(m, "%s.ncerts=%zu\n%s.certs=", n, s->ncerts, n);
    for (j = 0; j < s->ncerts; j++)
        fprintf(m, "%s%s:%s", j ? "," : "", str_text(s->certs[j].cert),
                str_text(s->certs[j].key));
    fprintf(m, "\n");
    dump_knobs(m, n, "client", &s->client_tls_knobs);
    dump_knobs(m, n, "backend", &s->backend_tls_knobs);
    fprintf(m, "%s.client_ca_file=%s\n%s.client_cert=%s\n", n,
            str_text(s->client_ca_file), n, ccert[s->client_cert]);
    fprintf(m, "%s.bare_newline=%s\n%s.trace_header=%s\n", n,
            bare[s->bare_newline], n, bool_text(s->trace_header));
    fprintf(m, "%s.backend_client_address=%s\n", n,
            addr[s->backend_client_address]);
    fprintf(m, "%s.client_proxy_protocol=%s\n%s.trusted_proxies=", n,
            bool_text(s->client_proxy_protocol), n);
    dump_cidrs(m, s->trusted_proxies, s->ntrusted_proxies);
    fprintf(m, "%s.max_connections=%u\n%s.max_connections_per_ip=%u\n", n,
            s->max_connections, n, s->max_connections_per_ip);
    fprintf(m, "%s.max_errors=%u\n%s.command_timeout=%u\n", n,
            s->max_errors, n, s->command_timeout);
    fprintf(m, "%s.tls_handshake_timeout=%u\n%s.min_data_rate=%u\n", n,
            s->tls_handshake_timeout, n, s->min_data_rate);
    fprintf(m, "%s.enforce=%s\n%s.profiles=", n, bool_text(s->enforce), n);
    for (j = 0; j < s->nprofiles; j++)
        fprintf(m, "%s%s", j ? "," : "", s->profiles[j]->name);
    fprintf(m, "\n%s.ehlo_pass=", n);
    for (j = 0; j < s->nehlo_pass; j++)
        fprintf(m, "%s%s", j ? "," : "", s->ehlo_pass[j]);
    fprintf(m, "\n");
}

/* dump - cfg as "key=value" lines, service keys prefixed "name.". */
static char *dump(const struct config *cfg)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    static const char *const ctls[] = { "none", "may", "encrypt" };
    static const char *const btls[] = { "none", "may", "encrypt", "verify",
                                        "dane", "dane-only", "fingerprint" };
    char *buf = NULL;
    size_t len = 0, i, j;
    FILE *m = open_memstream(&buf, &len);

    assert_non_null(m);
    fprintf(m, "services=%zu\nhostname=%s\nlog_level=%s\nworkers=%u\n",
            cfg->nservices, str_text(cfg->hostname), levels[cfg->log_level],
            cfg->workers);
    fprintf(m, "dns_resolver=%s\ndns_trust_anchor=%s\ndns_timeout=%u\n",
            str_text(cfg->dns_resolver), str_text(cfg->dns_trust_anchor),
            cfg->dns_timeout);
    for (i = 0; i < cfg->nservices; i++) {
        const struct service *s = &cfg->services[i];
        const char *n = s->name;

        fprintf(m, "%s.line=%d\n%s.listen=", n, s->line, n);
        for (j = 0; j < s->nlisten; j++)
            fprintf(m, "%s%s", j ? "," : "", s->listen[j].text);
        fprintf(m, "\n%s.backend_host=%s\n%s.backend_port=%s\n", n,
                str_text(s->backend_host), n, str_text(s->backend_port));
        fprintf(m, "%s.backend_mx=%s\n%s.backend_pins=", n,
                bool_text(s->backend_mx), n);
        for (j = 0; j < s->nbackend_pins; j++)
            fprintf(m, "%s%s:%02x..%02x", j ? "," : "",
                    s->backend_pins[j].pubkey ? "pubkey" : "cert",
                    s->backend_pins[j].sha256[0],
                    s->backend_pins[j].sha256[31]);
        fprintf(m, "\n");
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
        fprintf(m, "%s.transparent=%s\n%s.transparent_source=%s\n"
                "%s.backend_mark=%u\n%s.transparent_destinations=%zu\n", n,
                (const char *[]){ "off", "redirect", "tproxy" }[s->transparent],
                n, s->transparent_source ? "client" : "proxy", n,
                s->backend_mark, n, s->ntransparent_destinations);
        dump_hardening(m, s);
    }
    fprintf(m, "profiles=%zu\n", cfg->nprofiles);
    for (i = 0; i < cfg->nprofiles; i++)
        dump_profile(m, &cfg->profiles[i]);
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

/* The issue 3 fields as the rest of the proxy reads them: cert/key are
 * the first pair, profiles point into cfg->profiles, ranges are real
 * socket addresses, protocol floors are OpenSSL's numbers. */
/* auth_load - config_load of a verify service with backend_auth = auth
 * and extra keys, reading the credentials file cred; 0 or -1 (err). */
static int auth_load(const char *extra, const char *cred, struct config **cfg,
                     char *err, size_t err_len)
{
    char text[1024], path[32];
    int rc;

    snprintf(text, sizeof text,
             "[in]\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:587\n"
             "client_tls = none\nbackend_auth_file = %s\n%s", cred, extra);
    write_temp(path, text, strlen(text));
    rc = config_load(path, cfg, err, err_len);
    unlink(path);
    return rc;
}

/* backend_auth: the file's format, its mode, and the rules with
 * backend_tls, enforce and sources; the secret is in no message */
static void test_backend_auth(void **state)
{
    static const char ok[] = "backend_auth = plain\nbackend_tls = verify\n"
                             "sources = 10.0.0.0/8\n";
    char cred[32], err[2048], extra[256];
    struct config *cfg = NULL;
    const char *file;

    (void)state;
    file = "# the account\nuser printer@example.org\r\n"
           "password  s3cret with blanks\n\n";
    write_temp(cred, file, strlen(file));   /* mkstemp: mode 0600, ours */
    if (auth_load(ok, cred, &cfg, err, sizeof err) != 0)
        fail_msg("unexpected errors:\n%s", err);
    assert_int_equal(cfg->services[0].backend_auth, BACKEND_AUTH_PLAIN);
    assert_string_equal(cfg->services[0].auth_user, "printer@example.org");
    assert_string_equal(cfg->services[0].auth_password, "s3cret with blanks");
    assert_int_equal(cfg->services[0].nsources, 1);
    config_free(cfg);

    /* the user from the configuration is refused beside a user line */
    snprintf(extra, sizeof extra, "%sbackend_auth_user = other\n", ok);
    assert_int_equal(auth_load(extra, cred, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "has a user line, and backend_auth_user"));

    /* group or others may read it: refused, and the secret not shown */
    assert_int_equal(chmod(cred, 0640), 0);
    assert_int_equal(auth_load(ok, cred, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "mode 0640 lets group or others"));
    assert_null(strstr(err, "s3cret"));
    assert_int_equal(chmod(cred, 0600), 0);
    unlink(cred);

    /* a password line only, the user in the configuration */
    file = "password pw\n";
    write_temp(cred, file, strlen(file));
    snprintf(extra, sizeof extra, "%sbackend_auth = login\n"
             "backend_auth_user = dev\n", ok + strlen("backend_auth = plain\n"));
    if (auth_load(extra, cred, &cfg, err, sizeof err) != 0)
        fail_msg("unexpected errors:\n%s", err);
    assert_int_equal(cfg->services[0].backend_auth, BACKEND_AUTH_LOGIN);
    assert_string_equal(cfg->services[0].auth_user, "dev");
    assert_string_equal(cfg->services[0].auth_password, "pw");
    config_free(cfg);
    /* ... without it, no user at all */
    assert_int_equal(auth_load(ok, cred, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "has no user line"));

    /* policies that may end in plaintext, enforce = no, no sources */
    assert_int_equal(auth_load("backend_auth = plain\nbackend_tls = may\n"
                               "sources = 10.0.0.0/8\n"
                               "backend_auth_user = u\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "never falls back to plaintext"));
    assert_non_null(strstr(err, "not may"));
    assert_int_equal(auth_load("backend_auth = plain\nbackend_tls = none\n"
                               "sources = 10.0.0.0/8\n"
                               "backend_auth_user = u\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "not none"));
    assert_int_equal(auth_load("backend_auth = plain\nbackend_tls = verify\n"
                               "backend_auth_user = u\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "backend_auth needs sources"));
    assert_int_equal(auth_load("backend_auth = plain\nbackend_tls = encrypt\n"
                               "sources = 10.0.0.0/8\nenforce = no\n"
                               "backend_auth_user = u\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "needs enforce = yes"));
    /* XCLIENT after the login would undo it (Postfix starts over) */
    assert_int_equal(auth_load("backend_auth = plain\nbackend_tls = encrypt\n"
                               "sources = 10.0.0.0/8\n"
                               "backend_client_address = xclient\n"
                               "backend_auth_user = u\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "backend_client_address = xclient do not"));
    /* the file without backend_auth */
    assert_int_equal(auth_load("backend_tls = verify\n", cred, &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "backend_auth_file needs backend_auth"));
    unlink(cred);
    /* a file that is not there */
    assert_int_equal(auth_load(ok, "/nonexistent/cred", &cfg, err,
                               sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
    /* not "user" or "password" */
    file = "user u\npasswd pw\n";
    write_temp(cred, file, strlen(file));
    assert_int_equal(auth_load(ok, cred, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2: \"user NAME\" or \"password"));
    unlink(cred);
}

static void test_hardening_fields(void **state)
{
    static const char text[] =
        "[profile old]\nsources = 10.1.2.0/24, 2001:db8::/32\n"
        "client_tls_min_protocol = TLSv1\nclient_tls = none\n"
        "[a]\nlisten = 127.0.0.1:2525\nbackend = h:25\n"
        "cert = /rsa.pem, /ec.pem\nkey = /rsa.key, /ec.key\n"
        "profiles = new, old\nclient_proxy_protocol = yes\n"
        "trusted_proxies = 192.0.2.7\n"
        "[b]\nlisten = 127.0.0.1:2526\nbackend = h:25\nclient_tls = none\n"
        "profiles = old\nbackend_tls_min_protocol = TLSv1.3\n"
        "[profile new]\nsources = ::/0\n";
    char path[32], err[1024];
    struct config *cfg = NULL;
    const struct service *a, *b;
    const struct profile *old, *new;
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;
    struct in6_addr want6;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    if (config_load(path, &cfg, err, sizeof err) != 0)
        fail_msg("unexpected errors:\n%s", err);
    unlink(path);
    assert_int_equal(cfg->nservices, 2);
    assert_int_equal(cfg->nprofiles, 2);
    a = &cfg->services[0];
    b = &cfg->services[1];
    old = &cfg->profiles[0];
    new = &cfg->profiles[1];
    assert_string_equal(old->name, "old");
    assert_string_equal(new->name, "new");

    assert_int_equal(a->ncerts, 2);
    assert_ptr_equal(a->cert, a->certs[0].cert);
    assert_ptr_equal(a->key, a->certs[0].key);
    assert_string_equal(a->certs[1].cert, "/ec.pem");
    assert_string_equal(a->certs[1].key, "/ec.key");
    assert_int_equal(b->ncerts, 0);
    assert_null(b->cert);
    assert_null(b->certs);

    assert_int_equal(a->nprofiles, 2);
    assert_ptr_equal(a->profiles[0], new);
    assert_ptr_equal(a->profiles[1], old);
    assert_int_equal(b->nprofiles, 1);
    assert_ptr_equal(b->profiles[0], old);

    assert_int_equal(old->nsources, 2);
    sin = (const struct sockaddr_in *)&old->sources[0].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(sin->sin_port, 0);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x0a010200);
    assert_int_equal(old->sources[0].prefix, 24);
    sin6 = (const struct sockaddr_in6 *)&old->sources[1].addr;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(sin6->sin6_port, 0);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::", &want6), 1);
    assert_memory_equal(&sin6->sin6_addr, &want6, sizeof want6);
    assert_int_equal(old->sources[1].prefix, 32);
    assert_true(old->has_min_protocol);
    assert_int_equal(old->min_protocol, 0x301);  /* TLS1_VERSION */
    assert_true(old->has_client_tls);
    assert_int_equal(old->client_tls, CLIENT_TLS_NONE);
    assert_false(new->has_client_tls);
    assert_false(new->has_security_level);
    assert_null(new->ciphers);
    assert_int_equal(new->sources[0].prefix, 0);

    assert_true(a->client_proxy_protocol);
    assert_int_equal(a->ntrusted_proxies, 1);
    assert_int_equal(a->trusted_proxies[0].prefix, 32);
    sin = (const struct sockaddr_in *)&a->trusted_proxies[0].addr;
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0xc0000207);
    assert_int_equal(a->client_tls_knobs.min_protocol, 0x303);
    assert_int_equal(b->backend_tls_knobs.min_protocol, 0x304);
    assert_int_equal(a->client_tls_knobs.security_level, -1);
    config_free(cfg);
}

static void gen_profiles(FILE *m)
{
    int i;

    fprintf(m, "[in]\nlisten = 127.0.0.1:25\nbackend = h:25\n"
               "client_tls = none\n");
    for (i = 0; i < 257; i++)
        fprintf(m, "[profile p%d]\nsources = 10.%d.%d.0/24\n", i, i / 256,
                i % 256);
}

/* At most 256 profiles; the 257th header (line 517) is refused. */
static void test_too_many_profiles(void **state)
{
    char err[1024];

    (void)state;
    assert_int_equal(load_generated(gen_profiles, err, sizeof err), -1);
    assert_non_null(strstr(err, ":517: too many profiles (at most 256)\n"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
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
        cmocka_unit_test(test_hardening_fields),
        cmocka_unit_test(test_backend_auth),
        cmocka_unit_test(test_too_many_profiles),
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
