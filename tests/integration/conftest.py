"""
conftest.py - fixtures of the integration suite.

Session fixtures: certs, postfix_backend, posttls_finger_env.
Per-test factories: proxy, proxy_check, smtp_sink, aiosmtpd_backend,
scripted_backend.  Every process or thread a factory starts is stopped at
the end of the test; the proxy must exit 0 on SIGTERM within 5 s.
"""

import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (AiosmtpdBackend, PostfixInstance, ProxyProcess,  # noqa: E402
                     ScriptedBackend, SmtpSink, client_tls_context, free_port,
                     make_certs, run_check, server_tls_context, write_ini)


@pytest.fixture(scope="session")
def proxy_bin():
    return harness.proxy_bin()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    return make_certs(d)


@pytest.fixture(scope="session")
def client_ctx(certs):
    """client_ctx - verifying client TLS context trusting the test CA."""
    return client_tls_context(certs.ca)


@pytest.fixture(scope="session")
def backend_tls_ctx(certs):
    """backend_tls_ctx - server context with the CA-signed backend cert."""
    return server_tls_context(certs.backend_cert, certs.backend_key)


@pytest.fixture(scope="session")
def untrusted_tls_ctx(certs):
    return server_tls_context(certs.untrusted_cert, certs.untrusted_key)


@pytest.fixture(scope="session")
def postfix_backend(certs):
    pf = PostfixInstance(certs)
    yield pf
    pf.stop()


@pytest.fixture
def smtp_sink():
    sinks = []

    def start(*flags, port=None, backlog=100):
        s = SmtpSink(*flags, port=port, backlog=backlog)
        sinks.append(s)
        return s
    yield start
    for s in sinks:
        s.stop()


@pytest.fixture
def aiosmtpd_backend():
    started = []

    def start(tls_ctx=None, implicit_ctx=None):
        b = AiosmtpdBackend(tls_ctx=tls_ctx, implicit_ctx=implicit_ctx)
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


@pytest.fixture
def scripted_backend():
    started = []

    def start(**options):
        b = ScriptedBackend(**options)
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


def service_keys(certs, backend, **keys):
    """service_keys - a service section: listen on a picked port, the given
    backend, the proxy certificate, then the test's own keys (a key given
    as None is left out)."""
    section = {
        "listen": "127.0.0.1:%d" % free_port(),
        "backend": backend,
        "cert": certs.proxy_cert,
        "key": certs.proxy_key,
    }
    section.update(keys)
    return {k: v for k, v in section.items() if v is not None}


@pytest.fixture
def proxy(proxy_bin, certs, tmp_path):
    """proxy(backend_port, **keys) -> ProxyProcess; backend= overrides the
    backend address, extra_sections= adds services.  Teardown: SIGTERM,
    exit status 0 within 5 s."""
    running = []

    def start(backend_port=None, backend=None, extra_sections=None,
              proxy_keys=None, preexec_fn=None, **keys):
        if backend is None:
            backend = "127.0.0.1:%d" % backend_port
        sections = {"proxy": {"hostname": "proxy.test",
                              "log_level": "debug"}}
        sections["proxy"].update(proxy_keys or {})
        sections["smtp"] = service_keys(certs, backend, **keys)
        for name, sec in (extra_sections or {}).items():
            sections[name] = sec
        ports = [int(sec["listen"].rsplit(":", 1)[1])
                 for name, sec in sections.items() if name != "proxy"]
        p = ProxyProcess(proxy_bin, str(tmp_path), sections, ports,
                         name="proxy%d" % len(running), preexec_fn=preexec_fn)
        running.append(p)
        return p
    yield start
    failures = []
    for p in running:
        if p.proc.poll() is not None and getattr(p, "expected_exit", False):
            continue
        rc = p.stop()
        if rc != 0:
            failures.append("proxy pid %d: exit status %r after SIGTERM "
                            "(want 0 within 5 s)\n%s"
                            % (p.pid, rc, p.log_text()[-4000:]))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def proxy_check(proxy_bin, tmp_path):
    """proxy_check(sections | text) -> (rc, output, ini_path): runs
    `starttls-proxy -t -c FILE`."""
    counter = [0]

    def check(sections):
        counter[0] += 1
        ini = str(tmp_path / ("check%d.ini" % counter[0]))
        if isinstance(sections, str):
            with open(ini, "w") as f:
                f.write(sections)
        else:
            write_ini(ini, sections)
        rc, out = run_check(proxy_bin, ini)
        return rc, out, ini
    return check


@pytest.fixture(scope="session")
def posttls_finger_env(tmp_path_factory):
    """posttls_finger_env - environment for posttls-finger: it reads a
    main.cf, so give it an empty private one (MAIL_CONFIG)."""
    d = str(tmp_path_factory.mktemp("ptf-conf"))
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write("compatibility_level = 3.6\n")
    return dict(os.environ, MAIL_CONFIG=d)


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix="stp-") as d:
        yield d
