//! Rulesets shaped like the `iptables-save` dumps of real hosts, for the benchmark
//! (`benches/audit.rs`), the scale tests and `examples/gen-ruleset.rs`: not a flat
//! list but the chain layouts that tools write, combined as on a Kubernetes node
//! that also runs ufw, Docker and fail2ban:
//!
//! - ufw's chain layout (`ufw-before-input` … `ufw-after-logging-input`, the
//!   `ufw-not-local` addrtype checks, conntrack RELATED,ESTABLISHED, the logging
//!   chains behind `limit`, the ssh rate limit with `recent`), and a large block of
//!   per-service rules in `ufw-user-input`: multiport and single ports, port
//!   ranges, source CIDRs of every prefix length, iprange, comments, some denies;
//!   per-team user chains jumped to by source (some with an early RETURN), and a
//!   shared management chain jumped to from every team chain;
//! - Docker: `DOCKER-USER`, `DOCKER-ISOLATION-STAGE-1/2` with `-i`/`-o` bridges
//!   (stage 2 jumped to once per bridge), published ports in `DOCKER` (filter) and
//!   their DNAT and MASQUERADE in nat;
//! - kube-proxy: `KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` with `statistic`
//!   random probabilities, `KUBE-MARK-MASQ`, DNAT in nat, node ports through
//!   `KUBE-EXT-*`, REJECTs for services without endpoints and the `KUBE-FIREWALL` /
//!   `KUBE-FORWARD` chains in filter;
//! - fail2ban: `f2b-*` chains of /32 REJECTs ending in RETURN, jumped to first.
//!
//! The text is what `iptables-save` (1.8, nf_tables) prints for it: chains
//! declared base chains first, then user chains in byte order, rules grouped by
//! chain, options in the order the tool prints them, filter before nat; `tests/netns.rs` loads it
//! with the real `iptables-restore` and checks the dump gives back every rule.
//! Deterministic: the same size and seed give the same text.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Lcg;

/// One table being written: chains in declaration order with their rules.
struct Table {
    name: &'static str,
    base: Vec<(&'static str, &'static str)>,
    user: BTreeMap<String, Vec<String>>,
    base_rules: BTreeMap<&'static str, Vec<String>>,
}

impl Table {
    fn new(name: &'static str, base: &[(&'static str, &'static str)]) -> Table {
        Table {
            name,
            base: base.to_vec(),
            user: BTreeMap::new(),
            base_rules: BTreeMap::new(),
        }
    }

    /// Append a rule to `chain` (declared on first use when it is a user chain).
    fn add(&mut self, chain: &str, rule: impl Into<String>) {
        let rule = rule.into();
        match self.base.iter().find(|(b, _)| *b == chain) {
            Some((b, _)) => self.base_rules.entry(b).or_default().push(rule),
            None => self.user.entry(chain.to_string()).or_default().push(rule),
        }
    }

    /// Declare a user chain that may stay empty.
    fn declare(&mut self, chain: &str) {
        self.user.entry(chain.to_string()).or_default();
    }

    fn rules(&self) -> usize {
        self.user
            .values()
            .chain(self.base_rules.values())
            .map(Vec::len)
            .sum()
    }

    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "*{}", self.name);
        for (b, policy) in &self.base {
            let _ = writeln!(s, ":{b} {policy} [0:0]");
        }
        for c in self.user.keys() {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for (b, _) in &self.base {
            for r in self.base_rules.get(b).into_iter().flatten() {
                let _ = writeln!(s, "-A {b} {r}");
            }
        }
        for (c, rules) in &self.user {
            for r in rules {
                let _ = writeln!(s, "-A {c} {r}");
            }
        }
        s.push_str("COMMIT\n");
    }
}

impl Lcg {
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next(xs.len() as u64) as usize]
    }

    /// A public IPv4 address (outside the private and documentation blocks the
    /// host's own rules use).
    fn public(&mut self) -> [u64; 4] {
        loop {
            let a = 1 + self.next(223);
            if ![10, 127, 172, 192, 198, 203].contains(&a) {
                return [a, self.next(256), self.next(256), 1 + self.next(254)];
            }
        }
    }

    /// A source network of a mixed prefix length, written as iptables-save does
    /// (network address, `/len`).
    fn source(&mut self) -> String {
        let len = *self.pick(&[32, 32, 32, 29, 28, 27, 24, 24, 24, 22, 20, 16, 16, 12, 8]);
        let a = match self.next(4) {
            0 => self.public(),
            1 => [192, 0, 2, self.next(256)],
            2 => [198, 51, 100, self.next(256)],
            _ => [10, self.next(256), self.next(256), self.next(256)],
        };
        let v = (a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3];
        let v = v & (u64::MAX << (32 - len)) & 0xffff_ffff;
        format!(
            "{}.{}.{}.{}/{len}",
            v >> 24,
            (v >> 16) & 255,
            (v >> 8) & 255,
            v & 255
        )
    }
}

/// Services the per-service rules open, by (protocol, port).
const SERVICES: &[(&str, u16)] = &[
    ("tcp", 22),
    ("tcp", 25),
    ("tcp", 53),
    ("udp", 53),
    ("tcp", 80),
    ("tcp", 88),
    ("udp", 88),
    ("udp", 123),
    ("tcp", 143),
    ("udp", 161),
    ("tcp", 389),
    ("tcp", 443),
    ("tcp", 445),
    ("tcp", 465),
    ("udp", 514),
    ("tcp", 587),
    ("tcp", 636),
    ("tcp", 993),
    ("tcp", 1433),
    ("udp", 1812),
    ("tcp", 2049),
    ("tcp", 3000),
    ("tcp", 3306),
    ("tcp", 3389),
    ("tcp", 5432),
    ("tcp", 5672),
    ("tcp", 6379),
    ("tcp", 6443),
    ("tcp", 8080),
    ("tcp", 8443),
    ("tcp", 9090),
    ("tcp", 9100),
    ("tcp", 9200),
    ("tcp", 10250),
    ("tcp", 27017),
];

/// The host's own addresses (destinations of per-service rules).
const HOST_ADDRS: &[&str] = &[
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "10.0.0.5",
    "10.0.0.6",
];

const LOG_LIMIT: &str = "-m limit --limit 3/min --limit-burst 10";

/// A kube-proxy chain hash: 16 characters of base32, as kube-proxy names its chains.
fn kube_hash(g: &mut Lcg) -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..16).map(|_| char::from(*g.pick(B32))).collect()
}

/// What `iptables-save` prints for `--probability p`: the kernel keeps
/// `round(p * 2^31)`, printed back with 11 decimals.
fn probability(p: f64) -> String {
    let k = (p * 2_147_483_648.0).round();
    format!("{:.11}", k / 2_147_483_648.0)
}

fn ufw(f: &mut Table) {
    for dir in ["input", "forward", "output"] {
        f.declare(&format!("ufw-user-logging-{dir}"));
    }
    for (base, dir) in [
        ("INPUT", "input"),
        ("FORWARD", "forward"),
        ("OUTPUT", "output"),
    ] {
        for stage in [
            "before-logging",
            "before",
            "after",
            "after-logging",
            "reject",
            "track",
        ] {
            f.add(base, format!("-j ufw-{stage}-{dir}"));
            f.declare(&format!("ufw-{stage}-{dir}"));
        }
        f.declare(&format!("ufw-user-{dir}"));
    }
    let bi = "ufw-before-input";
    f.add(bi, "-i lo -j ACCEPT");
    f.add(bi, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
    f.add(bi, "-m conntrack --ctstate INVALID -j ufw-logging-deny");
    f.add(bi, "-m conntrack --ctstate INVALID -j DROP");
    for t in [3, 11, 12, 8] {
        f.add(bi, format!("-p icmp -m icmp --icmp-type {t} -j ACCEPT"));
    }
    f.add(bi, "-p udp -m udp --sport 67 --dport 68 -j ACCEPT");
    f.add(bi, "-j ufw-not-local");
    f.add(bi, "-d 224.0.0.251/32 -p udp -m udp --dport 5353 -j ACCEPT");
    f.add(
        bi,
        "-d 239.255.255.250/32 -p udp -m udp --dport 1900 -j ACCEPT",
    );
    f.add(bi, "-j ufw-user-input");
    let bo = "ufw-before-output";
    f.add(bo, "-o lo -j ACCEPT");
    f.add(bo, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
    f.add(bo, "-j ufw-user-output");
    let bf = "ufw-before-forward";
    f.add(bf, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
    for t in [3, 11, 12, 8] {
        f.add(bf, format!("-p icmp -m icmp --icmp-type {t} -j ACCEPT"));
    }
    f.add(bf, "-j ufw-user-forward");
    for (proto, port) in [
        ("udp", 137),
        ("udp", 138),
        ("tcp", 139),
        ("tcp", 445),
        ("udp", 67),
        ("udp", 68),
    ] {
        f.add(
            "ufw-after-input",
            format!("-p {proto} -m {proto} --dport {port} -j ufw-skip-to-policy-input"),
        );
    }
    f.add(
        "ufw-after-input",
        "-m addrtype --dst-type BROADCAST -j ufw-skip-to-policy-input",
    );
    for dir in ["input", "forward"] {
        f.add(
            &format!("ufw-after-logging-{dir}"),
            format!("{LOG_LIMIT} -j LOG --log-prefix \"[UFW BLOCK] \""),
        );
    }
    f.add(
        "ufw-logging-allow",
        format!("{LOG_LIMIT} -j LOG --log-prefix \"[UFW ALLOW] \""),
    );
    f.add(
        "ufw-logging-deny",
        format!("-m conntrack --ctstate INVALID {LOG_LIMIT} -j RETURN"),
    );
    f.add(
        "ufw-logging-deny",
        format!("{LOG_LIMIT} -j LOG --log-prefix \"[UFW BLOCK] \""),
    );
    for t in ["LOCAL", "MULTICAST", "BROADCAST"] {
        f.add(
            "ufw-not-local",
            format!("-m addrtype --dst-type {t} -j RETURN"),
        );
    }
    f.add("ufw-not-local", format!("{LOG_LIMIT} -j ufw-logging-deny"));
    f.add("ufw-not-local", "-j DROP");
    f.add("ufw-skip-to-policy-forward", "-j DROP");
    f.add("ufw-skip-to-policy-input", "-j DROP");
    f.add("ufw-skip-to-policy-output", "-j ACCEPT");
    for proto in ["tcp", "udp"] {
        f.add(
            "ufw-track-output",
            format!("-p {proto} -m conntrack --ctstate NEW -j ACCEPT"),
        );
    }
    f.add(
        "ufw-user-limit",
        "-m limit --limit 3/min -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"",
    );
    f.add(
        "ufw-user-limit",
        "-j REJECT --reject-with icmp-port-unreachable",
    );
    f.add("ufw-user-limit-accept", "-j ACCEPT");
    let ui = "ufw-user-input";
    let recent = "--name DEFAULT --mask 255.255.255.255 --rsource";
    f.add(
        ui,
        format!("-p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --set {recent}"),
    );
    f.add(
        ui,
        format!(
            "-p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 {recent} -j ufw-user-limit"
        ),
    );
    f.add(ui, "-p tcp -m tcp --dport 22 -j ufw-user-limit-accept");
}

/// One per-service rule, as ufw or an administrator writes them.
fn service_rule(g: &mut Lcg, i: usize) -> String {
    let &(proto, port) = g.pick(SERVICES);
    let src = g.source();
    let dst = match g.next(3) {
        0 => format!("-d {}/32 ", g.pick(HOST_ADDRS)),
        _ => String::new(),
    };
    let verdict = match g.next(20) {
        0 => "DROP",
        1 => "REJECT --reject-with icmp-port-unreachable",
        _ => "ACCEPT",
    };
    match g.next(20) {
        0..=6 => format!("-s {src} {dst}-p {proto} -m {proto} --dport {port} -j {verdict}"),
        7..=10 => {
            let mut ports = vec![port];
            for _ in 0..1 + g.next(5) {
                let &(_, p) = g.pick(SERVICES);
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!(
                "-s {src} {dst}-p {proto} -m multiport --dports {} -j {verdict}",
                list.join(",")
            )
        }
        11..=12 => {
            let lo = 1024 + g.next(60_000);
            let hi = lo + g.next(2_000).min(65_535 - lo);
            format!("-s {src} {dst}-p {proto} -m {proto} --dport {lo}:{hi} -j {verdict}")
        }
        13 => {
            let (a, b) = (g.next(256), g.next(256));
            let lo = 1 + g.next(100);
            format!(
                "{dst}-p {proto} -m iprange --src-range 10.{a}.{b}.{lo}-10.{a}.{b}.{} -m {proto} --dport {port} -j {verdict}",
                lo + g.next(150)
            )
        }
        14..=15 => format!(
            "-s {src} {dst}-p {proto} -m {proto} --dport {port} -m comment --comment \"ticket CHG-{i} {}\" -j {verdict}",
            g.next(10_000)
        ),
        16 => format!(
            "{dst}-p {proto} -m {proto} --dport {port} -m conntrack --ctstate NEW -m limit --limit {}/sec -j ACCEPT",
            1 + g.next(50)
        ),
        17 => format!("-s {src} -j {verdict}"),
        _ => format!("-s {src} -p {proto} -m {proto} --dport {port} -j {verdict}"),
    }
}

fn fail2ban(f: &mut Table, g: &mut Lcg, bans: usize) {
    let jails = [
        ("sshd", "-p tcp -m multiport --dports 22"),
        ("nginx-http-auth", "-p tcp -m multiport --dports 80,443"),
        ("postfix", "-p tcp -m multiport --dports 25,465,587"),
        ("dovecot", "-p tcp -m multiport --dports 110,143,993,995"),
        ("recidive", "-p tcp"),
    ];
    for (jail, m) in jails {
        f.add("INPUT", format!("{m} -j f2b-{jail}"));
    }
    let mut recent = Vec::new();
    for k in 0..bans {
        let (jail, _) = jails[[0, 0, 0, 1, 1, 2, 3, 4][k % 8]];
        // An address banned again by another jail (recidive repeats offenders).
        let a = if !recent.is_empty() && g.next(10) == 0 {
            *g.pick(&recent)
        } else {
            g.public()
        };
        recent.push(a);
        if recent.len() > 64 {
            recent.remove(0);
        }
        f.add(
            &format!("f2b-{jail}"),
            format!(
                "-s {}.{}.{}.{}/32 -j REJECT --reject-with icmp-port-unreachable",
                a[0], a[1], a[2], a[3]
            ),
        );
    }
    for (jail, _) in jails {
        f.add(&format!("f2b-{jail}"), "-j RETURN");
    }
}

fn docker(f: &mut Table, n: &mut Table, g: &mut Lcg, bridges: usize, published: usize) {
    let names: Vec<String> = (0..bridges)
        .map(|b| {
            if b == 0 {
                "docker0".to_string()
            } else {
                format!("br-{:06x}{:06x}", g.next(1 << 24), g.next(1 << 24))
            }
        })
        .collect();
    f.add("FORWARD", "-j DOCKER-USER");
    f.add("FORWARD", "-j DOCKER-ISOLATION-STAGE-1");
    f.declare("DOCKER");
    for (b, br) in names.iter().enumerate() {
        f.add(
            "FORWARD",
            format!("-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        );
        f.add("FORWARD", format!("-o {br} -j DOCKER"));
        f.add("FORWARD", format!("-i {br} ! -o {br} -j ACCEPT"));
        f.add("FORWARD", format!("-i {br} -o {br} -j ACCEPT"));
        f.add(
            "DOCKER-ISOLATION-STAGE-1",
            format!("-i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2"),
        );
        f.add("DOCKER-ISOLATION-STAGE-2", format!("-o {br} -j DROP"));
        n.add(
            "POSTROUTING",
            format!("-s 172.{}.0.0/16 ! -o {br} -j MASQUERADE", 17 + b),
        );
        n.add("DOCKER", format!("-i {br} -j RETURN"));
    }
    f.add("DOCKER-ISOLATION-STAGE-1", "-j RETURN");
    f.add("DOCKER-ISOLATION-STAGE-2", "-j RETURN");
    f.add(
        "DOCKER-USER",
        "-i eth0 -p tcp -m conntrack --ctorigdstport 5432 -j DROP",
    );
    f.add("DOCKER-USER", "-s 10.0.0.0/8 -i eth0 -j RETURN");
    f.add("DOCKER-USER", "-i eth0 -p tcp -m tcp --dport 2375 -j DROP");
    f.add("DOCKER-USER", "-j RETURN");
    n.add("PREROUTING", "-m addrtype --dst-type LOCAL -j DOCKER");
    n.add(
        "OUTPUT",
        "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
    );
    for k in 0..published {
        let b = g.next(bridges as u64) as usize;
        let br = &names[b];
        let ip = format!("172.{}.{}.{}", 17 + b, g.next(4), 2 + g.next(250));
        let &(proto, port) = g.pick(SERVICES);
        let host_port = 8000 + k;
        f.add(
            "DOCKER",
            format!("-d {ip}/32 ! -i {br} -o {br} -p {proto} -m {proto} --dport {port} -j ACCEPT"),
        );
        n.add(
            "POSTROUTING",
            format!("-s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {port} -j MASQUERADE"),
        );
        n.add(
            "DOCKER",
            format!(
                "! -i {br} -p {proto} -m {proto} --dport {host_port} -j DNAT --to-destination {ip}:{port}"
            ),
        );
    }
}

fn kube(f: &mut Table, n: &mut Table, g: &mut Lcg, services: usize) {
    let fw = "-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL";
    let ext = "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES";
    let portals = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    f.add("INPUT", format!("-m conntrack --ctstate NEW {fw}"));
    f.add(
        "INPUT",
        "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS",
    );
    f.add("INPUT", format!("-m conntrack --ctstate NEW {ext}"));
    f.add("INPUT", "-j KUBE-FIREWALL");
    f.add("FORWARD", format!("-m conntrack --ctstate NEW {fw}"));
    f.add(
        "FORWARD",
        "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
    );
    f.add("FORWARD", format!("-m conntrack --ctstate NEW {portals}"));
    f.add("FORWARD", format!("-m conntrack --ctstate NEW {ext}"));
    f.add("OUTPUT", format!("-m conntrack --ctstate NEW {fw}"));
    f.add("OUTPUT", format!("-m conntrack --ctstate NEW {portals}"));
    f.add("OUTPUT", "-j KUBE-FIREWALL");
    f.add(
        "KUBE-FIREWALL",
        "! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
    );
    f.add("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP");
    f.add(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
    );
    f.add(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    );
    for c in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        f.declare(c);
    }

    n.add("PREROUTING", portals);
    n.add("OUTPUT", portals);
    n.add(
        "POSTROUTING",
        "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
    );
    n.add("KUBE-MARK-MASQ", "-j MARK --set-xmark 0x4000/0x4000");
    n.add(
        "KUBE-POSTROUTING",
        "-m mark ! --mark 0x4000/0x4000 -j RETURN",
    );
    n.add("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0");
    n.add(
        "KUBE-POSTROUTING",
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    );
    let mut node_port = 30_000;
    for s in 0..services {
        let ns = g.pick(&[
            "default",
            "kube-system",
            "prod",
            "staging",
            "monitoring",
            "payments",
        ]);
        let name = format!(
            "{ns}/svc-{s}:{}",
            g.pick(&["http", "https", "grpc", "metrics"])
        );
        let cip = format!("10.{}.{}.{}", 96 + g.next(16), g.next(256), 1 + g.next(254));
        let &(proto, port) = g.pick(&[
            ("tcp", 80),
            ("tcp", 443),
            ("tcp", 8080),
            ("tcp", 9090),
            ("udp", 53),
            ("tcp", 5432),
        ]);
        let endpoints = *g.pick(&[0, 1, 1, 2, 2, 2, 3, 3, 5, 8]);
        let nodeport = g.next(5) == 0;
        if endpoints == 0 {
            f.add(
                "KUBE-SERVICES",
                format!(
                    "-d {cip}/32 -p {proto} -m comment --comment \"{name} has no endpoints\" -m {proto} --dport {port} -j REJECT --reject-with icmp-port-unreachable"
                ),
            );
            if nodeport {
                f.add(
                    "KUBE-EXTERNAL-SERVICES",
                    format!(
                        "-p {proto} -m comment --comment \"{name} has no endpoints\" -m addrtype --dst-type LOCAL -m {proto} --dport {node_port} -j REJECT --reject-with icmp-port-unreachable"
                    ),
                );
                node_port += 1;
            }
            continue;
        }
        let svc = format!("KUBE-SVC-{}", kube_hash(g));
        n.add(
            "KUBE-SERVICES",
            format!(
                "-d {cip}/32 -p {proto} -m comment --comment \"{name} cluster IP\" -m {proto} --dport {port} -j {svc}"
            ),
        );
        n.add(
            &svc,
            format!(
                "! -s 10.244.0.0/16 -d {cip}/32 -p {proto} -m comment --comment \"{name} cluster IP\" -m {proto} --dport {port} -j KUBE-MARK-MASQ"
            ),
        );
        if nodeport {
            let ext = format!("KUBE-EXT-{}", kube_hash(g));
            n.add(
                "KUBE-NODEPORTS",
                format!(
                    "-p {proto} -m comment --comment \"{name}\" -m {proto} --dport {node_port} -j {ext}"
                ),
            );
            n.add(
                &ext,
                format!(
                    "-m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
                ),
            );
            n.add(&ext, format!("-j {svc}"));
            if g.next(3) == 0 {
                f.add(
                    "KUBE-NODEPORTS",
                    format!(
                        "-p tcp -m comment --comment \"{name} health check node port\" -m tcp --dport {} -j ACCEPT",
                        node_port + 2_000
                    ),
                );
            }
            node_port += 1;
        }
        if g.next(8) == 0 {
            let lb = format!("198.18.{}.{}", g.next(256), 1 + g.next(254));
            f.add(
                "KUBE-PROXY-FIREWALL",
                format!(
                    "-d {lb}/32 -p {proto} -m comment --comment \"{name} traffic not accepted by KUBE-FW-{}\" -m {proto} --dport {port} -j DROP",
                    kube_hash(g)
                ),
            );
        }
        for e in 0..endpoints {
            let ep = format!("10.244.{}.{}", g.next(256), 2 + g.next(250));
            let sep = format!("KUBE-SEP-{}", kube_hash(g));
            let rest = endpoints - e;
            if rest > 1 {
                n.add(
                    &svc,
                    format!(
                        "-m comment --comment \"{name} -> {ep}:{port}\" -m statistic --mode random --probability {} -j {sep}",
                        probability(1.0 / rest as f64)
                    ),
                );
            } else {
                n.add(
                    &svc,
                    format!("-m comment --comment \"{name} -> {ep}:{port}\" -j {sep}"),
                );
            }
            n.add(
                &sep,
                format!("-s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"),
            );
            n.add(
                &sep,
                format!(
                    "-p {proto} -m comment --comment \"{name}\" -m {proto} -j DNAT --to-destination {ep}:{port}"
                ),
            );
        }
    }
    n.add(
        "KUBE-SERVICES",
        "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    );
    n.declare("KUBE-NODEPORTS");
}

/// The user rules: per-team chains jumped to by source, a shared management chain
/// jumped to from each of them, and the flat per-service block of
/// `ufw-user-input`, until the ruleset holds `n` rules.
fn users(f: &mut Table, n: &mut Table, g: &mut Lcg, total: usize, teams: usize) {
    let ui = "ufw-user-input";
    let mgmt = "mgmt-common";
    for (src, port) in [
        ("10.0.10.0/24", 22),
        ("10.0.20.5/32", 161),
        ("10.0.20.0/24", 9100),
        ("10.0.30.0/28", 5666),
    ] {
        let proto = if port == 161 { "udp" } else { "tcp" };
        f.add(
            mgmt,
            format!("-s {src} -p {proto} -m {proto} --dport {port} -j ACCEPT"),
        );
    }
    f.add(mgmt, "-j RETURN");
    for t in 0..teams {
        let chain = format!("team-{t:03}");
        f.add(ui, format!("-s 10.{}.0.0/16 -j {chain}", 100 + t));
        if g.next(3) == 0 {
            f.add(&chain, format!("-s 10.{}.99.0/24 -j RETURN", 100 + t));
        }
        f.add(&chain, format!("-j {mgmt}"));
    }
    f.add(ui, format!("-j {mgmt}"));
    // A few port forwards of the host's public addresses.
    for k in 0..total / 500 {
        let &(proto, port) = g.pick(SERVICES);
        n.add(
            "PREROUTING",
            format!(
                "-d 203.0.113.{}/32 -p {proto} -m {proto} --dport {} -j DNAT --to-destination 10.0.{}.{}:{port}",
                10 + g.next(3),
                20_000 + k,
                g.next(256),
                1 + g.next(254)
            ),
        );
    }
    let mut i = 0;
    while f.rules() + n.rules() < total {
        let rule = service_rule(g, i);
        if teams > 0 && g.next(3) == 0 {
            let t = g.next(teams as u64) as usize;
            // Team rules name the team's own sources half the time.
            let rule = if g.next(2) == 0 && rule.starts_with("-s ") {
                let rest = rule.split_once(' ').map_or("", |x| x.1);
                let rest = rest.split_once(' ').map_or("", |x| x.1);
                format!("-s 10.{}.{}.0/24 {rest}", 100 + t, g.next(256))
            } else {
                rule
            };
            f.add(&format!("team-{t:03}"), rule);
        } else {
            f.add(ui, rule);
        }
        i += 1;
    }
}

/// An `iptables-save` text of `n` rules (nat and filter tables) shaped like a
/// Kubernetes node that also runs ufw, Docker and fail2ban (see the module
/// documentation). About 40 % of the rules are kube-proxy's, 10 % fail2ban bans,
/// 3 % Docker's published ports and the rest ufw's framework and user rules.
pub fn host(n: usize, seed: u64) -> String {
    let mut g = Lcg(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut f = Table::new(
        "filter",
        &[("INPUT", "DROP"), ("FORWARD", "DROP"), ("OUTPUT", "ACCEPT")],
    );
    let mut nat = Table::new(
        "nat",
        &[
            ("PREROUTING", "ACCEPT"),
            ("INPUT", "ACCEPT"),
            ("OUTPUT", "ACCEPT"),
            ("POSTROUTING", "ACCEPT"),
        ],
    );
    // Inserted (`-I`) by their tools, so first in the base chains.
    fail2ban(&mut f, &mut g, n / 10);
    kube(&mut f, &mut nat, &mut g, n / 28);
    docker(&mut f, &mut nat, &mut g, (2 + n / 2_000).min(30), n / 35);
    ufw(&mut f);
    users(&mut f, &mut nat, &mut g, n, (n / 250).clamp(2, 150));
    let mut s = String::with_capacity(n * 110);
    f.write(&mut s);
    nat.write(&mut s);
    s
}
