//! Network namespaces with a firewall and a peer, for tests that load rulesets
//! into the kernel, dump them with the real tools and replay example packets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use intraport_rules::model::{Family, Location, RuleId, Ruleset};
use intraport_rules::{Finding, InputFormat, Packet, parse};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop.
pub struct NetNs(pub String);

impl NetNs {
    pub fn new(tag: &str) -> Option<NetNs> {
        let name = format!(
            "intraport-rules-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "notice: skipping real-firewall test, `ip netns add` not permitted: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(NetNs(name))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A firewall namespace and a peer namespace joined by a veth pair (`vfw` on the
/// firewall side).
pub struct Lab {
    pub fw: NetNs,
    pub peer: NetNs,
}

impl Lab {
    pub fn new() -> Option<Lab> {
        let fw = NetNs::new("fw")?;
        let peer = NetNs::new("peer")?;
        fw.run(&[
            "ip", "link", "add", "vfw", "type", "veth", "peer", "name", "vpeer", "netns", &peer.0,
        ]);
        fw.run(&["ip", "link", "set", "lo", "up"]);
        fw.run(&["ip", "link", "set", "vfw", "up"]);
        peer.run(&["ip", "link", "set", "lo", "up"]);
        peer.run(&["ip", "link", "set", "vpeer", "up"]);
        fw.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Translated destinations are forwarded back out of `vfw`.
        fw.run(&["ip", "route", "add", "10.99.3.0/24", "dev", "vfw"]);
        Some(Lab { fw, peer })
    }

    /// Put the packet's source address on the peer side and its destination on
    /// the firewall side, with routes, so the kernel sees it arrive on `vfw`.
    fn place(&self, p: &Packet) {
        self.place_source(p);
        let dst = format!("{}/{}", p.dst, if p.dst.is_ipv4() { 32 } else { 128 });
        let add = ["ip", "addr", "add", &dst, "dev", "vfw", "nodad"];
        let _ = self.fw.cmd(&add).output();
    }

    /// The peer's side of [`Lab::place`] (its source address, a route to the
    /// destination) and the firewall's route back.
    fn place_source(&self, p: &Packet) {
        let src = p.src.to_string();
        let len = if p.src.is_ipv4() { 32 } else { 128 };
        let (srcnet, dstnet) = (format!("{src}/{len}"), format!("{}/{len}", p.dst));
        let add = ["ip", "addr", "add", &srcnet, "dev", "vpeer", "nodad"];
        let _ = self.peer.cmd(&add).output();
        let route = [
            "ip", "route", "replace", &dstnet, "dev", "vpeer", "src", &src,
        ];
        let _ = self.peer.cmd(&route).output();
        let back = ["ip", "route", "replace", &srcnet, "dev", "vfw"];
        let _ = self.fw.cmd(&back).output();
    }

    /// Python that opens a socket for the packet as `s`: TCP and UDP from its
    /// source port, any other protocol as a raw socket of that number.
    fn socket_script(p: &Packet) -> String {
        let fam = if p.src.is_ipv4() {
            "AF_INET"
        } else {
            "AF_INET6"
        };
        let (kind, proto) = match p.proto {
            6 => ("SOCK_STREAM", 0),
            17 => ("SOCK_DGRAM", 0),
            n => ("SOCK_RAW", n),
        };
        let bind_port = if proto == 0 { p.sport } else { 0 };
        format!(
            "import socket,time,sys\n\
s=socket.socket(socket.{fam},socket.{kind},{proto})\n\
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('{src}',{bind_port}))\n",
            src = p.src
        )
    }

    /// Send the example packet from the peer: its source address is put on the
    /// peer side, its destination on the firewall side, so the kernel sees exactly
    /// this packet arrive on `vfw`. It keeps sending (TCP retransmits its SYN by
    /// itself) until the test has read the counters and kills the process.
    pub fn send(&self, p: &Packet) -> Child {
        self.place(p);
        self.sender(p)
    }

    fn sender(&self, p: &Packet) -> Child {
        let script = format!(
            "{}s.setblocking(False)\n\
if s.type==socket.SOCK_STREAM:\n    s.connect_ex(('{dst}',{dport}))\n    time.sleep(30)\n\
else:\n    for _ in range(300):\n        s.sendto(b'xxxxxxxx',('{dst}',{dport})); time.sleep(0.1)\n",
            Lab::socket_script(p),
            dst = p.dst,
            dport = if p.proto == 6 || p.proto == 17 {
                p.dport
            } else {
                0
            },
        );
        self.peer
            .cmd(&["python3", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Send the packet through the firewall rather than to it: as [`Lab::send`],
    /// but the destination stays off the firewall, which routes it on.
    pub fn send_forwarded(&self, p: &Packet) -> Child {
        self.place_source(p);
        // The firewall answers the peer's ARP for the destination it routes on.
        self.fw
            .run(&["sysctl", "-qw", "net.ipv4.conf.vfw.proxy_arp=1"]);
        self.sender(p)
    }

    /// Whether the firewall lets a TCP connection attempt (the packet, as a SYN)
    /// through to its own stack: the answer is a SYN-ACK or, with nothing
    /// listening, a reset (the kernel's own; a REJECT rule's reset would count too,
    /// so tests that use this have none for the packet). A drop leaves the attempt
    /// to time out after 3 s.
    pub fn reaches(&self, p: &Packet) -> bool {
        assert_eq!(p.proto, 6, "reaches() probes with TCP");
        self.place(p);
        let script = format!(
            "{}s.settimeout(3)\n\
try:\n    s.connect(('{dst}',{dport})); print('reached')\n\
except ConnectionRefusedError: print('reached')\n\
except OSError as e: print('dropped', e)\n",
            Lab::socket_script(p),
            dst = p.dst,
            dport = p.dport,
        );
        let out = self.peer.run(&["python3", "-c", &script]);
        out.starts_with("reached")
    }
}

pub fn dump(ns: &NetNs, format: InputFormat) -> Ruleset {
    match format {
        InputFormat::Iptables => {
            parse(format, "dump.v4", &ns.run(&["iptables-save", "-c"])).unwrap()
        }
        _ => parse(
            format,
            "dump.json",
            &ns.run(&["nft", "-j", "list", "ruleset"]),
        )
        .unwrap(),
    }
}

/// A new dump of the same kind as `audited`: ip6tables-save for an IPv6 one.
pub fn dump_like(ns: &NetNs, audited: &Ruleset) -> Ruleset {
    let v6 = audited.format == InputFormat::Iptables
        && audited
            .tables
            .first()
            .is_some_and(|t| t.family == Family::V6);
    if v6 {
        parse(
            audited.format,
            "dump.v6",
            &ns.run(&["ip6tables-save", "-c"]),
        )
        .unwrap()
    } else {
        dump(ns, audited.format)
    }
}

/// The rule a finding names (by line, or by nftables handle), as an index that is
/// stable across dumps of the same ruleset.
pub fn id_of(rs: &Ruleset, loc: &Location) -> RuleId {
    for (t, table) in rs.tables.iter().enumerate() {
        for (c, chain) in table.chains.iter().enumerate() {
            for (r, rule) in chain.rules.iter().enumerate() {
                if rule.loc.line == loc.line && rule.loc.name == loc.name {
                    return RuleId {
                        table: t,
                        chain: c,
                        rule: r,
                    };
                }
            }
        }
    }
    panic!("no rule at {loc}");
}

pub fn packets(rs: &Ruleset, id: RuleId) -> u64 {
    rs.rule(id).unwrap().packets.unwrap()
}

/// Replay a finding's example and return the counter deltas of (the rule, each
/// related rule), once the first related rule's counter moved (or a deadline).
pub fn replay(lab: &Lab, audited: &Ruleset, f: &Finding) -> (u64, Vec<u64>) {
    let rule = id_of(audited, &f.rule.as_ref().unwrap().loc);
    let related: Vec<RuleId> = f.related.iter().map(|r| id_of(audited, &r.loc)).collect();
    let before = dump_like(&lab.fw, audited);
    let mut child = lab.send(f.example.as_ref().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after;
    loop {
        after = dump_like(&lab.fw, audited);
        if packets(&after, related[0]) > packets(&before, related[0]) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let delta = |id| packets(&after, id) - packets(&before, id);
    (delta(rule), related.iter().map(|&id| delta(id)).collect())
}
