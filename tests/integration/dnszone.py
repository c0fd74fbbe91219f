"""
dnszone.py - authoritative, DNSSEC-signed DNS for the integration tests.

One nsd process on 127.0.0.1:<port> serves every zone of a DnsZones
object.  Signed zones are signed with ldns-signzone (one ECDSAP256SHA256
key, algorithm 13, with the SEP bit: a "CSK"; NSEC; signatures valid from
an hour ago until a day from now).  Nothing here is a recursive resolver:
point one (libunbound, unbound-host) at 127.0.0.1@port with a forward-zone
for "." and give it `trust_anchor`.

    from dnszone import DnsZones, tlsa_rdata

    dns = DnsZones(str(tmp_path / "dns"))
    ex = dns.zone("example.")                       # signed
    ex.add("mx1", "A", "127.0.0.1")
    ex.add("@", "MX", "10 mx1")
    ex.add("_25._tcp.mx1", "TLSA", tlsa_rdata(3, "leaf.pem"))
    ins = dns.zone("insecure.example.", signed=False)
    ins.add("host", "A", "127.0.0.1")
    dns.start()
    try:
        ...   # resolver: forward "." to 127.0.0.1@dns.port,
              #           trust anchor file dns.trust_anchor
        dns.tamper("example.", "_25._tcp.mx1", "TLSA", "3 1 1 " + "00" * 32)
        dns.reload()                                # now BOGUS
    finally:
        dns.stop()

What it does for you:
  * every zone gets SOA and NS (ns1.<zone>, A 127.0.0.1); the SOA serial
    goes up by one at each reload();
  * a zone whose origin lies below another zone here is delegated from
    it: NS + glue (ns1.<child> A 127.0.0.1), and a DS when the child is
    signed.  An unsigned child of a signed parent is therefore provably
    insecure (the parent's NSEC proves there is no DS);
  * trust_anchor is a file with the DS records (zone-file format, as
    ub_ctx_add_ta_file / unbound's trust-anchor-file read it) of every
    signed zone that has no signed parent here.  Keys are made once per
    DnsZones, so the file stays valid across reload().

Resolver side (libunbound, as proxy/dns.c sets it up): ub_ctx_set_fwd
("127.0.0.1@<port>"), ub_ctx_add_ta_file(trust_anchor) or ub_ctx_add_ta()
per line, and do-not-query-localhost "no" (unbound 1.17 used a 127.0.0.1
forwarder without it too, but other versions drop localhost servers).
Zone "test." will not work: unbound answers it locally (NXDOMAIN, built-in
local-zone); use "example." and the like.  Records have TTL 60 and the
resolver caches: after reload()/tamper() a resolver context that already
asked keeps the old answer until it expires (use a fresh context, another
name, or a small ttl= in add()).

Only the standard library, nsd (nsd, nsd-control) and ldnsutils
(ldns-keygen, ldns-signzone, ldns-key2ds), plus openssl for
tlsa_rdata(); soa_serial(port, origin) is a tiny SOA query of our own.
Missing programs raise; nothing is skipped.
"""

import hashlib
import os
import random
import signal
import socket
import struct
import subprocess
import time

TIMEOUT = 30.0          # generous: a loaded 2-core machine
SIG_VALIDITY = 86400    # signatures expire a day after (re)signing


def _run(argv, **kw):
    """Run a command, return its stdout (bytes); raise with stderr on error."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT, **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (
            " ".join(argv), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1, below the ephemeral
    range (as harness.free_port) so no outgoing socket takes it first."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for nsd")


def _labels(name):
    """Labels of an absolute name, lower case; the root is []."""
    return [l for l in name.lower().rstrip(".").split(".") if l]


def _is_below(name, origin):
    """True when name is origin or a name below it."""
    n, o = _labels(name), _labels(origin)
    return len(n) >= len(o) and (not o or n[-len(o):] == o)


class Zone:
    """The records of one zone; SOA, NS and delegations are added by
    DnsZones when it writes the zone file."""

    def __init__(self, origin, signed):
        self.origin = origin
        self.signed = signed
        self.records = []       # (absolute owner, ttl, TYPE, rdata)
        self.key = None         # key base name (no .key/.private) once made

    def name(self, owner):
        """Absolute form of an owner: "@" is the origin, "mx1" is
        "mx1.<origin>", "mx1.example." stays as it is."""
        if owner == "@":
            return self.origin
        if owner.endswith("."):
            return owner
        return owner + "." + self.origin if self.origin != "." else owner + "."

    def add(self, owner, rrtype, rdata, ttl=60):
        """Add one record.  Names inside rdata may be relative to the
        origin (the zone file has $ORIGIN)."""
        self.records.append((self.name(owner), int(ttl), rrtype.upper(),
                             str(rdata)))

    def remove(self, owner, rrtype=None):
        """Drop the records of owner (only those of rrtype, if given);
        for changing data before reload()."""
        owner = self.name(owner).lower()
        self.records = [r for r in self.records
                        if not (r[0].lower() == owner and
                                (rrtype is None or r[2] == rrtype.upper()))]


class DnsZones:
    """Authoritative DNS for tests: nsd on 127.0.0.1:<port>, zones signed
    with ldns-signzone."""

    def __init__(self, workdir):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(os.path.join(self.workdir, "keys"), exist_ok=True)
        self.port = _free_port()            # known before start(): resolver
        self.trust_anchor = os.path.join(self.workdir, "trust-anchors.ds")
        self.conf = os.path.join(self.workdir, "nsd.conf")
        self.log = os.path.join(self.workdir, "nsd.log")
        self.zones = {}                     # origin (lower case) -> Zone
        self.serial = 1
        self._tampered = []                 # (origin, owner, TYPE, rdata)
        self._proc = None
        self._conf_zones = set()            # zones in nsd.conf as written
        # nsd-control over a unix socket in the workdir, when its path fits
        # in sun_path (108 bytes); otherwise reload() restarts nsd.
        ctl = os.path.join(self.workdir, "nsd.ctl")
        self._ctl = ctl if len(ctl) < 100 else None

    # ---------------------------------------------------------------- zones

    def zone(self, origin, signed=True):
        """The Zone for origin ("example."), made on first use."""
        if not origin.endswith("."):
            raise ValueError("origin must be absolute: %r" % origin)
        key = origin.lower()
        if key not in self.zones:
            self.zones[key] = Zone(origin, signed)
        return self.zones[key]

    def tamper(self, origin, owner, rrtype, new_rdata):
        """After each signing (at start() and every reload()), replace the
        RRset owner/rrtype of the signed zone origin by the single record
        new_rdata, keeping the old RRSIG: a validator finds it BOGUS."""
        z = self.zones[origin.lower()]
        if not z.signed:
            raise ValueError("%s is not signed: nothing to tamper" % origin)
        self._tampered.append((z.origin, z.name(owner), rrtype.upper(),
                               str(new_rdata)))

    def _parent(self, z):
        """Nearest other zone here that z lies below, or None."""
        best = None
        for p in self.zones.values():
            if p is not z and _is_below(z.origin, p.origin) and (
                    best is None or
                    len(_labels(p.origin)) > len(_labels(best.origin))):
                best = p
        return best

    def _file(self, z):
        label = z.origin.lower().rstrip(".") or "root"
        return os.path.join(self.workdir, label + ".zone")

    def _served_file(self, z):
        return self._file(z) + (".signed" if z.signed else "")

    def _make_key(self, z):
        """One CSK per signed zone: ldns-signzone signs every RRset with a
        lone SEP key.  Made once, so DS and trust anchor stay valid."""
        if z.key is None:
            keydir = os.path.join(self.workdir, "keys")
            base = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k",
                         z.origin], cwd=keydir).decode().strip()
            z.key = os.path.join(keydir, base)
        return z.key

    def _ds(self, z):
        """The SHA-256 DS record of z's key: "owner ttl IN DS rdata"."""
        out = _run(["ldns-key2ds", "-n", "-2", self._make_key(z) + ".key"])
        return out.decode().strip()

    def _write_and_sign(self):
        """Write every zone file, sign the signed zones (children first, so
        that their DS is known when the parent is written), apply tamper."""
        order = sorted(self.zones.values(),
                       key=lambda z: -len(_labels(z.origin)))
        now = int(time.time())
        for z in order:
            ns = "ns1." + z.origin
            lines = ["$ORIGIN %s" % z.origin, "$TTL 60",
                     "%s 60 IN SOA %s hostmaster.%s %d 3600 600 86400 60"
                     % (z.origin, ns, z.origin, self.serial),
                     "%s 60 IN NS %s" % (z.origin, ns),
                     "%s 60 IN A 127.0.0.1" % ns]
            # delegations to the zones directly below this one
            for c in self.zones.values():
                if self._parent(c) is z:
                    cns = "ns1." + c.origin
                    lines += ["%s 60 IN NS %s" % (c.origin, cns),
                              "%s 60 IN A 127.0.0.1" % cns]
                    if c.signed:
                        ds_rdata = self._ds(c).split(None, 4)[4]
                        lines.append("%s 60 IN DS %s" % (c.origin, ds_rdata))
            lines += ["%s %d IN %s %s" % r for r in z.records]
            with open(self._file(z), "w") as f:
                f.write("\n".join(lines) + "\n")
            if z.signed:
                _run(["ldns-signzone", "-o", z.origin,
                      "-i", str(now - 3600), "-e", str(now + SIG_VALIDITY),
                      "-f", self._served_file(z), self._file(z),
                      self._make_key(z)])
        for t in self._tampered:
            self._apply_tamper(*t)
        for z in order:                 # a bad record fails here, clearly
            _run(["nsd-checkzone", z.origin, self._served_file(z)])
        # trust anchors: signed zones with no signed parent here
        with open(self.trust_anchor, "w") as f:
            for z in order:
                p = self._parent(z)
                if z.signed and not (p and p.signed):
                    f.write(self._ds(z) + "\n")

    def _apply_tamper(self, origin, owner, rrtype, new_rdata):
        """Edit the signed file: the first record of the RRset gets
        new_rdata, the others go; the RRSIG lines stay untouched."""
        path = self._served_file(self.zones[origin.lower()])
        with open(path) as f:
            lines = f.read().splitlines()
        out, done = [], False
        for line in lines:
            # ldns-signzone writes "owner<TAB>ttl<TAB>IN<TAB>TYPE<TAB>rdata"
            f5 = line.split(None, 4)
            if (len(f5) == 5 and f5[0].lower() == owner.lower()
                    and f5[3].upper() == rrtype):
                if not done:
                    out.append("\t".join(f5[:4] + [new_rdata]))
                    done = True
                continue
            out.append(line)
        if not done:
            raise ValueError("tamper: no %s %s in %s" % (owner, rrtype, path))
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")

    # ---------------------------------------------------------------- nsd

    def _write_conf(self):
        w = self.workdir
        conf = [
            "server:",
            "  ip-address: 127.0.0.1@%d" % self.port,
            "  do-ip4: yes",
            "  do-ip6: no",
            "  server-count: 1",
            '  username: ""',           # stay root: no privilege drop
            '  chroot: ""',
            '  zonesdir: "%s"' % w,
            '  database: ""',           # no nsd.db
            '  zonelistfile: "%s/zone.list"' % w,
            '  xfrdfile: ""',
            '  xfrdir: "%s"' % w,
            '  pidfile: "%s/nsd.pid"' % w,
            '  logfile: "%s"' % self.log,
            "  verbosity: 1",
            "  hide-version: yes",
            "remote-control:",
        ]
        if self._ctl:
            conf += ["  control-enable: yes",
                     "  control-interface: %s" % self._ctl]
        else:
            conf += ["  control-enable: no"]
        for z in self.zones.values():
            conf += ["zone:", '  name: "%s"' % z.origin,
                     '  zonefile: "%s"' % self._served_file(z)]
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        self._conf_zones = set(self.zones)

    def _serial_served(self, origin):
        """The SOA serial nsd answers for origin now, or None."""
        return soa_serial(self.port, origin)

    def _wait_served(self, timeout=TIMEOUT):
        """Wait until every zone is answered with the current serial."""
        deadline = time.monotonic() + timeout
        pending = list(self.zones.values())
        while pending:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError("nsd exited:\n" + self._log_tail())
            pending = [z for z in pending
                       if self._serial_served(z.origin) != self.serial]
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _log_tail(self):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return "(no nsd log)"

    def _spawn(self):
        """Start nsd in the foreground (-d) in a session of its own, so that
        stop() can end it with all its children."""
        with open(os.path.join(self.workdir, "nsd.out"), "ab") as out:
            self._proc = subprocess.Popen(
                ["nsd", "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ok = self._wait_served()
        except RuntimeError:            # nsd exited: bad zone or config
            self.stop()
            raise
        if not ok:
            self.stop()
            raise RuntimeError("nsd on port %d did not serve serial %d:\n%s"
                               % (self.port, self.serial, self._log_tail()))

    def start(self):
        """Write and sign the zones, write nsd.conf, start nsd and wait until
        it answers the SOA of every zone."""
        if self._proc is not None:
            raise RuntimeError("nsd already started")
        if not self.zones:
            raise RuntimeError("no zones")
        self._write_and_sign()
        self._write_conf()
        _run(["nsd-checkconf", self.conf])
        self._spawn()

    def reload(self):
        """Bump the serial, re-write and re-sign every zone, and make nsd
        serve the new data (nsd-control reload; restart nsd on the same
        port instead when zones were added, or when that fails or the new
        serial does not show up)."""
        if self._proc is None:
            raise RuntimeError("nsd not started")
        self.serial += 1
        self._write_and_sign()
        if self._ctl and self._conf_zones == set(self.zones):
            ok = subprocess.run(["nsd-control", "-c", self.conf, "reload"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                timeout=TIMEOUT).returncode == 0
            if ok and self._wait_served(timeout=5):
                return
        self.stop()
        self._write_conf()
        self._spawn()

    def stop(self):
        """Stop nsd and wait until none of its processes is left; safe to
        call more than once."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid                 # start_new_session: pgid == pid
        # SIGTERM to the first process only: it shuts its children down
        # itself (a signal to all at once makes nsd log "Broken pipe").
        # SIGKILL to the whole group only if that did not work.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if sig == signal.SIGTERM:
                    proc.send_signal(sig)
                else:
                    os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
            # nsd's server children are not ours to reap: wait until they
            # are gone (or zombies) too
            deadline = time.monotonic() + 10
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _group_alive(pgid):
                return

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def soa_serial(port, origin, timeout=1.0):
    """Ask 127.0.0.1:port (UDP, no recursion) for origin's SOA; its serial,
    or None on no/short/error answer.  (drill would wait 15s when nothing
    listens yet, hence this small query of our own.)"""
    qname = b"".join(bytes([len(l)]) + l.encode() for l in _labels(origin))
    qid = random.randrange(65536)
    query = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + qname + b"\0" + \
        struct.pack("!HH", 6, 1)                # QTYPE SOA, QCLASS IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))      # so ICMP refused is seen
            s.send(query)
            msg = s.recv(4096)
        except OSError:                         # timeout, ICMP refused
            return None

    def skip_name(off):                         # past a (compressed) name
        while msg[off] != 0:
            if msg[off] & 0xC0 == 0xC0:
                return off + 2
            off += 1 + msg[off]
        return off + 1

    try:
        rid, flags, _, ancount = struct.unpack("!HHHH", msg[:8])
        if rid != qid or flags & 0x000F or ancount < 1:
            return None
        off = skip_name(12) + 4                 # question: name, type, class
        off = skip_name(off)                    # answer owner
        rtype = struct.unpack("!H", msg[off:off + 2])[0]
        if rtype != 6:
            return None
        off += 10                               # type class ttl rdlength
        off = skip_name(skip_name(off))         # MNAME, RNAME
        return struct.unpack("!I", msg[off:off + 4])[0]
    except (IndexError, struct.error):
        return None


def _group_alive(pgid):
    """True while a process of group pgid is still running (not a zombie)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..." - comm may contain spaces
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def tlsa_rdata(usage, pem_cert_path, selector=1, mtype=1):
    """TLSA rdata "usage selector mtype hex" for a PEM certificate:
    selector 0 = the whole certificate (DER), 1 = its SubjectPublicKeyInfo
    (DER); mtype 0 = the data itself, 1 = SHA-256, 2 = SHA-512.
    tlsa_rdata(3, "leaf.pem") is the usual DANE-EE "3 1 1 <sha256>"."""
    if selector == 0:
        data = _run(["openssl", "x509", "-in", pem_cert_path,
                     "-outform", "DER"])
    elif selector == 1:
        pub = _run(["openssl", "x509", "-in", pem_cert_path, "-noout",
                    "-pubkey"])
        data = _run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                    input=pub)
    else:
        raise ValueError("selector must be 0 or 1")
    if mtype == 0:
        digest = data.hex()
    elif mtype == 1:
        digest = hashlib.sha256(data).hexdigest()
    elif mtype == 2:
        digest = hashlib.sha512(data).hexdigest()
    else:
        raise ValueError("mtype must be 0, 1 or 2")
    return "%d %d %d %s" % (usage, selector, mtype, digest)
