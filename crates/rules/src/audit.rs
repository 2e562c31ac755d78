//! Findings: shadowed, redundant, correlated, overlapping NAT, DNAT into a drop,
//! overly permissive accepts, rules with unknown matches, tables not analysed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::analysis::{Action, Analysis, FlatChain, Part};
use crate::index::Index;
use crate::model::{Field, Location, Packet, RuleId, Ruleset, TableKind, Target, Values, Verdict};
use crate::space::{Found, GaveUp, Residue, Space};

/// How much a finding matters; `--fail-on` compares against this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record (parts not analysed, unknown matches).
    Info,
    /// Clutter that changes nothing (redundant, correlated).
    Low,
    /// A rule that does not do what it says (shadowed, NAT overlap).
    Medium,
    /// Exposure or breakage (permissive accept, DNAT into a drop, jump loop).
    High,
}

impl Severity {
    /// Parse `info|low|medium|high`.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            _ => return None,
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        })
    }
}

/// The kinds of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Earlier rules with a different action decide every packet it matches.
    Shadowed,
    /// Earlier rules with the same action decide all its packets, or removing it
    /// changes no decision.
    Redundant,
    /// Partial overlap with an earlier rule of a different action.
    Correlated,
    /// NAT rules whose matches overlap: one is dead or decides for the other.
    NatOverlap,
    /// A DNAT/REDIRECT whose translated packets the filter table drops.
    DnatDropped,
    /// Accepts new connections from any source to a sensitive port.
    Permissive,
    /// A jump that loops back into a chain on the current path.
    JumpLoop,
    /// A rule with matches the analysis does not model.
    UnknownMatch,
    /// A table parsed but not analysed (mangle, raw, ...).
    NotAnalysed,
    /// A question about a rule the analysis left open at its bound.
    NotDecided,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// A rule (or a chain policy) as findings name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Where it is written.
    pub loc: Location,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// The rule text, or `policy DROP`.
    pub text: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.loc.line.is_none() && self.loc.name.is_none() {
            write!(f, "{} {}/{}", self.text, self.table, self.chain)
        } else {
            write!(f, "{}", self.loc)
        }
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: Kind,
    /// How much it matters.
    pub severity: Severity,
    /// The rule concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// Other rules involved (covering, overlapping, dropping).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<RuleRef>,
    /// For people.
    pub message: String,
    /// A packet that demonstrates the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<Packet>,
    /// For NAT findings: the example packet after translation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translated: Option<Packet>,
    /// The base chain (hook) in which the finding was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

/// A port the audit calls sensitive when open to any source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SensitivePort {
    /// IP protocol number.
    pub proto: u8,
    /// Port.
    pub port: u16,
    /// Service name, for messages.
    pub name: String,
}

/// Settings of an audit.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Ports that should not be open to any source.
    pub sensitive_ports: Vec<SensitivePort>,
    /// Most correlated findings reported per rule (the rest are counted).
    pub max_correlated_per_rule: usize,
    /// Interfaces that face untrusted networks: an accept limited to other input
    /// interfaces (loopback, a container bridge, a LAN) is not called permissive.
    pub external_interfaces: Vec<String>,
    /// Most boxes a rule's reaching set is held as; past that its remaining
    /// subtractions are decided by search (`space::Residue`).
    pub max_boxes: usize,
    /// Box comparisons the searches about one rule may make; a question left open
    /// when they run out is reported `not-decided`, never guessed.
    pub search_budget: u64,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        let tcp = [
            (22, "ssh"),
            (23, "telnet"),
            (135, "msrpc"),
            (139, "netbios-ssn"),
            (389, "ldap"),
            (445, "smb"),
            (636, "ldaps"),
            (1433, "mssql"),
            (2375, "docker"),
            (3306, "mysql"),
            (3389, "rdp"),
            (5432, "postgresql"),
            (5985, "winrm"),
            (5986, "winrm-https"),
            (6379, "redis"),
            (9200, "elasticsearch"),
            (27017, "mongodb"),
        ];
        let udp = [(161, "snmp"), (389, "cldap")];
        let mut sensitive_ports: Vec<SensitivePort> = tcp
            .iter()
            .map(|&(port, name)| SensitivePort {
                proto: 6,
                port,
                name: name.into(),
            })
            .collect();
        sensitive_ports.extend(udp.iter().map(|&(port, name)| SensitivePort {
            proto: 17,
            port,
            name: name.into(),
        }));
        AuditOptions {
            sensitive_ports,
            max_correlated_per_rule: 3,
            external_interfaces: Vec::new(),
            max_boxes: 256,
            search_budget: 20_000_000,
        }
    }
}

/// Counts of what was audited.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Tables parsed.
    pub tables: usize,
    /// Base chains analysed.
    pub chains_analysed: usize,
    /// Rules parsed.
    pub rules: usize,
}

/// The audit of one ruleset.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The file audited.
    pub file: String,
    /// Its format.
    pub format: crate::model::InputFormat,
    /// Counts.
    pub stats: Stats,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is at or above `level`.
    pub fn fails(&self, level: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= level)
    }
}

impl Analysis<'_> {
    /// A reference to a rule for findings.
    pub fn rule_ref(&self, id: RuleId) -> Option<RuleRef> {
        let t = self.ruleset.tables.get(id.table)?;
        let c = t.chains.get(id.chain)?;
        let r = c.rules.get(id.rule)?;
        Some(RuleRef {
            loc: r.loc.clone(),
            table: t.name.clone(),
            chain: c.name.clone(),
            text: r.text.clone(),
        })
    }

    /// A reference to a deciding rule, or to the chain's policy.
    pub fn decider_ref(&self, chain: &FlatChain, by: Option<RuleId>) -> Option<RuleRef> {
        match by {
            Some(id) => self.rule_ref(id),
            None => {
                let t = self.ruleset.tables.get(chain.table)?;
                let c = t.chains.get(chain.chain)?;
                Some(RuleRef {
                    loc: Location {
                        file: self.ruleset.file.clone(),
                        line: None,
                        name: None,
                    },
                    table: t.name.clone(),
                    chain: c.name.clone(),
                    text: format!("policy {}", chain.policy),
                })
            }
        }
    }
}

/// Audit a parsed ruleset.
pub fn audit(rs: &Ruleset, opts: &AuditOptions) -> Report {
    let a = Analysis::new(rs);
    audit_analysis(&a, opts)
}

/// Audit an already compiled ruleset (lets callers reuse the analysis for
/// coverage).
pub fn audit_analysis(a: &Analysis<'_>, opts: &AuditOptions) -> Report {
    let rs = a.ruleset;
    let mut findings = Vec::new();
    let mut stats = Stats {
        tables: rs.tables.len(),
        chains_analysed: a.chains.len(),
        rules: 0,
    };
    for t in &rs.tables {
        stats.rules += t.chains.iter().map(|c| c.rules.len()).sum::<usize>();
        if t.kind == TableKind::Other {
            findings.push(Finding {
                kind: Kind::NotAnalysed,
                severity: Severity::Info,
                rule: None,
                related: Vec::new(),
                message: format!(
                    "table `{}` parsed ({} rules) but not analysed: only filter and nat decide or translate",
                    t.name,
                    t.chains.iter().map(|c| c.rules.len()).sum::<usize>()
                ),
                example: None,
                translated: None,
                hook: None,
            });
            continue;
        }
        for c in &t.chains {
            for r in &c.rules {
                if !r.unknown.is_empty() {
                    findings.push(Finding {
                        kind: Kind::UnknownMatch,
                        severity: Severity::Info,
                        rule: Some(RuleRef {
                            loc: r.loc.clone(),
                            table: t.name.clone(),
                            chain: c.name.clone(),
                            text: r.text.clone(),
                        }),
                        related: Vec::new(),
                        message: format!(
                            "not modelled: {}; the rule is treated as matching an unknown subset, so it never proves another rule shadowed",
                            r.unknown.join(", ")
                        ),
                        example: None,
                        translated: None,
                        hook: None,
                    });
                }
            }
        }
    }
    for l in &a.loops {
        findings.push(Finding {
            kind: Kind::JumpLoop,
            severity: Severity::High,
            rule: a.rule_ref(l.rule),
            related: Vec::new(),
            message: format!(
                "jump to `{}`, which is already being evaluated: a loop the kernel refuses to load",
                l.target
            ),
            example: None,
            translated: None,
            hook: None,
        });
    }
    for chain in &a.chains {
        chain_findings(a, chain, opts, &mut findings);
    }
    dnat_findings(a, &mut findings);
    dedup(&mut findings);
    findings.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then_with(|| x.kind.cmp(&y.kind))
            .then_with(|| loc_key(&x.rule).cmp(&loc_key(&y.rule)))
    });
    Report {
        file: rs.file.clone(),
        format: rs.format,
        stats,
        findings,
    }
}

fn loc_key(r: &Option<RuleRef>) -> (String, usize, String) {
    match r {
        Some(r) => (
            r.loc.file.clone(),
            r.loc.line.unwrap_or(0),
            r.loc.name.clone().unwrap_or_default(),
        ),
        None => (String::new(), 0, String::new()),
    }
}

/// A user chain jumped to from several places yields one finding per place; a rule
/// is shadowed or redundant only if it is so everywhere, so such findings are kept
/// only when every occurrence has them, and once.
fn dedup(findings: &mut Vec<Finding>) {
    let mut seen = BTreeMap::new();
    findings.retain(|f| {
        let key = (
            f.kind,
            loc_key(&f.rule),
            f.related
                .iter()
                .map(|r| loc_key(&Some(r.clone())))
                .collect::<Vec<_>>(),
            f.hook.clone(),
        );
        seen.insert(key, ()).is_none()
    });
}

fn is_nat(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::Dnat(_) | Verdict::Snat(_) | Verdict::Masquerade | Verdict::Redirect(_)
    )
}

fn chain_findings(
    a: &Analysis<'_>,
    chain: &FlatChain,
    opts: &AuditOptions,
    out: &mut Vec<Finding>,
) {
    let rules = &chain.rules;
    let index = Index::new(rules);
    // Occurrences of a rule that are reached: a rule is reported shadowed only if no
    // occurrence is reached.
    let mut reached: BTreeMap<RuleId, bool> = BTreeMap::new();
    let mut pending_dead: Vec<(RuleId, Finding)> = Vec::new();
    // Per rule: occurrences reached, and the removable findings of those.
    let mut removals: BTreeMap<RuleId, (usize, Vec<Finding>)> = BTreeMap::new();
    let nat = chain.kind == TableKind::Nat;
    let mut open = OpenQuestions::default();
    for (i, r) in rules.iter().enumerate() {
        let cap = opts.max_boxes;
        let mut budget = opts.search_budget;
        // What reaches the rule: `upper` less the exact earlier decisions (a
        // superset), `lower` less all of them (a subset).
        let mut upper = Residue::new(r.space.clone(), cap);
        let mut lower = Residue::new(
            if r.exact {
                r.space.clone()
            } else {
                Space::empty()
            },
            cap,
        );
        let mut covering: Vec<usize> = Vec::new();
        let mut correlated: Vec<(usize, Space)> = Vec::new();
        let candidates = index.candidates(i, 0..i);
        for &j in &candidates {
            let e = &rules[j];
            let Action::Decide(vj) = &e.action else {
                continue;
            };
            if upper.is_empty() && lower.is_empty() {
                break;
            }
            // Held as boxes, the overlap is a test; past the bound the covering
            // rules are found again below, only if the rule is dead.
            let hit = upper.exact().map(|u| u.overlaps(&e.space));
            if e.exact && hit != Some(false) {
                if hit == Some(true) {
                    covering.push(j);
                }
                if let Action::Decide(vi) = &r.action
                    && vi != vj
                    && r.exact
                    && correlated.len() < opts.max_correlated_per_rule
                    && !e.space.is_subset_of(&r.space)
                    && !r.space.is_subset_of(&e.space)
                {
                    match lower.find(Some(&e.space), &mut budget) {
                        Found::Some(part) => correlated.push((j, part)),
                        Found::None => {}
                        Found::GaveUp => open.add(r.id, "partly overlaps an earlier rule"),
                    }
                }
                upper.subtract_as(&e.space, j);
            }
            lower.subtract(&e.space);
        }
        // Past the bound, a search decides whether the rule is dead, and another
        // which rules decide its packets.
        let dead = match upper.find(None, &mut budget) {
            Found::Some(_) => false,
            Found::None if upper.exact().is_some() => true,
            Found::None => match upper.first_owners(&mut budget) {
                Ok(Some(owners)) => {
                    // The rule whose subtraction passed the bound is in both.
                    covering.extend(owners);
                    covering.sort_unstable();
                    covering.dedup();
                    true
                }
                Ok(None) | Err(GaveUp) => {
                    open.add(r.id, "shadowed or redundant");
                    false
                }
            },
            Found::GaveUp => {
                open.add(r.id, "shadowed or redundant");
                false
            }
        };
        let entry = reached.entry(r.id).or_insert(false);
        if !dead {
            *entry = true;
            removals.entry(r.id).or_default().0 += 1;
        }
        if dead {
            let f = dead_finding(a, chain, r, &covering, &candidates, nat, opts);
            pending_dead.push((r.id, f));
            continue;
        }
        let Action::Decide(vi) = &r.action else {
            continue;
        };
        for (j, part) in correlated {
            let Action::Decide(vj) = &rules[j].action else {
                continue;
            };
            let kind = if nat && (is_nat(vi) || is_nat(vj)) {
                Kind::NatOverlap
            } else {
                Kind::Correlated
            };
            out.push(Finding {
                kind,
                severity: if kind == Kind::NatOverlap {
                    Severity::Medium
                } else {
                    Severity::Low
                },
                rule: a.rule_ref(r.id),
                related: a.rule_ref(rules[j].id).into_iter().collect(),
                message: format!(
                    "partly overlaps an earlier rule with a different action: packets in the overlap get {vj} from the earlier rule, not {vi}"
                ),
                example: a.example(&part),
                translated: None,
                hook: Some(chain.hook.clone()),
            });
        }
        if r.exact {
            match removable(a, chain, &index, i, &upper, &lower, vi, &mut budget) {
                Ok(Some(f)) => removals.entry(r.id).or_default().1.push(f),
                Ok(None) => {}
                Err(GaveUp) => open.add(r.id, "removable"),
            }
        }
        if r.exact && *vi == Verdict::Accept && chain.kind == TableKind::Filter {
            permissive(a, chain, i, &lower, opts, &mut budget, &mut open, out);
        }
    }
    open.report(a, chain, opts, out);
    for (id, f) in pending_dead {
        if !reached.get(&id).copied().unwrap_or(false) {
            out.push(f);
        }
    }
    // A rule of a chain jumped to from several places is one rule: removable only
    // if every occurrence that decides anything is.
    for (_, (occurrences, mut fs)) in removals {
        if fs.len() == occurrences && !fs.is_empty() {
            out.push(fs.swap_remove(0));
        }
    }
}

fn dead_finding(
    a: &Analysis<'_>,
    chain: &FlatChain,
    r: &crate::analysis::FlatRule,
    covering: &[usize],
    candidates: &[usize],
    nat: bool,
    opts: &AuditOptions,
) -> Finding {
    let rules = &chain.rules;
    let related: Vec<RuleRef> = covering
        .iter()
        .filter_map(|&j| a.rule_ref(rules[j].id))
        .collect();
    let same = match &r.action {
        Action::Decide(v) => covering
            .iter()
            .all(|&j| rules[j].action == Action::Decide(v.clone())),
        Action::Continue => false,
    };
    // An example: a packet of the rule decided by the first covering rule with a
    // different action (or the first covering rule), reached for certain.
    let pick = covering
        .iter()
        .copied()
        .find(|&j| !same && rules[j].action != r.action)
        .or_else(|| covering.first().copied());
    let example = pick.and_then(|j| {
        let mut s = Residue::new(r.space.intersect(&rules[j].space), opts.max_boxes);
        // Every earlier rule that overlaps the rule is a candidate.
        for &k in candidates.iter().take_while(|&&k| k < j) {
            if matches!(rules[k].action, Action::Decide(_)) {
                s.subtract(&rules[k].space);
            }
        }
        match s.find(None, &mut opts.search_budget.clone()) {
            Found::Some(part) => a.example(&part),
            Found::None | Found::GaveUp => None,
        }
    });
    let (kind, severity, message) = if covering.is_empty() {
        (
            Kind::Shadowed,
            Severity::Medium,
            "no packet can match this rule here: its match is empty, or all of its packets leave the chain (RETURN) before it".to_string(),
        )
    } else if same {
        (
            Kind::Redundant,
            Severity::Low,
            "every packet it matches is already decided the same way by the earlier rules named"
                .to_string(),
        )
    } else {
        let verb = match &r.action {
            Action::Decide(v) => format!("its {v} never applies"),
            Action::Continue => "it is never reached".to_string(),
        };
        let kind = if nat {
            Kind::NatOverlap
        } else {
            Kind::Shadowed
        };
        (
            kind,
            Severity::Medium,
            format!("every packet it matches is decided earlier by the rules named: {verb}"),
        )
    };
    Finding {
        kind,
        severity,
        rule: a.rule_ref(r.id),
        related,
        message,
        example,
        translated: None,
        hook: Some(chain.hook.clone()),
    }
}

/// Whether removing rule `i` would change no decision: the packets it decides
/// would all get the same verdict from later rules or the policy.
#[allow(clippy::too_many_arguments)]
fn removable(
    a: &Analysis<'_>,
    chain: &FlatChain,
    index: &Index,
    i: usize,
    upper: &Residue,
    lower: &Residue,
    vi: &Verdict,
    budget: &mut u64,
) -> Result<Option<Finding>, GaveUp> {
    let rules = &chain.rules;
    let mut rest = upper.clone();
    let mut later = Vec::new();
    for j in index.candidates(i, i + 1..rules.len()) {
        let e = &rules[j];
        let Action::Decide(vj) = &e.action else {
            continue;
        };
        // Another occurrence of the same rule (its chain is jumped to again) goes
        // with it when it is removed: it decides nothing in its place.
        if e.id == rules[i].id || found(rest.find(Some(&e.space), budget))?.is_none() {
            continue;
        }
        if !e.exact || vj != vi {
            return Ok(None);
        }
        later.push(e.id);
        rest.subtract(&e.space);
        if rest.is_empty() {
            break;
        }
    }
    let mut related: Vec<RuleRef> = later.iter().filter_map(|&id| a.rule_ref(id)).collect();
    if found(rest.find(None, budget))?.is_some() {
        if chain.policy != *vi {
            return Ok(None);
        }
        related.extend(a.decider_ref(chain, None));
    }
    let example = match lower.find(None, budget) {
        Found::Some(s) => a.example(&s),
        Found::None | Found::GaveUp => None,
    };
    Ok(Some(Finding {
        kind: Kind::Redundant,
        severity: Severity::Low,
        rule: a.rule_ref(rules[i].id),
        related,
        message: format!(
            "removable: every packet it decides ({vi}) would get the same verdict from the later rules or policy named"
        ),
        example,
        translated: None,
        hook: Some(chain.hook.clone()),
    }))
}

/// The packets a search found (`None`: proved none), or that it gave up.
fn found(f: Found) -> Result<Option<Space>, GaveUp> {
    match f {
        Found::Some(s) => Ok(Some(s)),
        Found::None => Ok(None),
        Found::GaveUp => Err(GaveUp),
    }
}

/// Questions about rules of one flattened chain that searches left open.
#[derive(Default)]
struct OpenQuestions(BTreeMap<RuleId, Vec<&'static str>>);

impl OpenQuestions {
    fn add(&mut self, id: RuleId, what: &'static str) {
        let v = self.0.entry(id).or_default();
        if !v.contains(&what) {
            v.push(what);
        }
    }

    fn report(
        self,
        a: &Analysis<'_>,
        chain: &FlatChain,
        opts: &AuditOptions,
        out: &mut Vec<Finding>,
    ) {
        for (id, what) in self.0 {
            out.push(Finding {
                kind: Kind::NotDecided,
                severity: Severity::Info,
                rule: a.rule_ref(id),
                related: Vec::new(),
                message: format!(
                    "not decided: whether it is {}; the search for a proof reached its bound ({} box comparisons), so nothing is claimed",
                    what.join(", or "),
                    opts.search_budget
                ),
                example: None,
                translated: None,
                hook: Some(chain.hook.clone()),
            });
        }
    }
}

/// Public address space: IPv4 less the private and special-purpose blocks
/// (RFC 1918, CGNAT, loopback, link-local, multicast and reserved, "this network",
/// and Azure's platform address 168.63.129.16), and IPv6 global unicast 2000::/3.
fn public_space() -> [Vec<(u128, u128)>; 2] {
    let net = |s: &str| s.parse::<ipnet::IpNet>().map(crate::model::net_range).ok();
    let special: Vec<(u128, u128)> = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "168.63.129.16/32",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
    ]
    .iter()
    .filter_map(|s| net(s))
    .collect();
    let v4 = crate::addrtype::minus(net("0.0.0.0/0").into_iter().collect(), &special);
    [v4, net("2000::/3").into_iter().collect()]
}

/// Whether the ranges hold every public address of one family: a match that
/// leaves out only private space (NSG's `Internet`, `! -s 10.0.0.0/8`) is still
/// "any source".
fn covers_public(rs: &[(u128, u128)]) -> bool {
    public_space()
        .into_iter()
        .any(|family| crate::addrtype::minus(family, rs).is_empty())
}

/// Whether a rule, or a jump leading to it, restricts where packets come from:
/// the source address (anything short of every public address of a family), a
/// source address type, or the input interface. Loopback traffic comes from the
/// host itself. When the external interfaces are declared
/// (`AuditOptions::external_interfaces`), an accept limited to other input
/// interfaces (a container bridge, a LAN) is not "from any source"; when they are
/// not, that holds on FORWARD (traffic from an attached network, leaving: Docker's
/// `-i docker0 ! -o docker0`, a router's LAN to WAN), while an accept limited to an
/// input interface on INPUT is still judged.
fn restricts_source(a: &Analysis<'_>, id: RuleId, opts: &AuditOptions, hook: &str) -> bool {
    let Some(r) = a.ruleset.rule(id) else {
        return true;
    };
    r.conds.iter().any(|c| {
        if c.negated {
            return false;
        }
        match (c.field, &c.values) {
            (Field::Src, Values::Ranges(rs)) => !covers_public(rs),
            (Field::Src, Values::Tags(ts)) => !ts.iter().any(|t| t == "Internet"),
            (Field::Src, Values::AddrTypes(_)) => true,
            (Field::Iif, Values::Ifaces(pats)) => {
                let external = |p: &crate::model::IfPat| {
                    if p.name == "lo" && !p.wildcard {
                        false
                    } else if opts.external_interfaces.is_empty() {
                        !hook.eq_ignore_ascii_case("forward")
                    } else {
                        opts.external_interfaces.iter().any(|e| p.matches(e))
                    }
                };
                !pats.iter().any(external)
            }
            _ => false,
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn permissive(
    a: &Analysis<'_>,
    chain: &FlatChain,
    i: usize,
    lower: &Residue,
    opts: &AuditOptions,
    budget: &mut u64,
    open_questions: &mut OpenQuestions,
    out: &mut Vec<Finding>,
) {
    let hook = chain.hook.to_ascii_lowercase();
    if !matches!(
        hook.as_str(),
        "input" | "forward" | "inbound" | "prerouting"
    ) {
        return;
    }
    let r = &chain.rules[i];
    if restricts_source(a, r.id, opts, &hook)
        || r.path.iter().any(|&p| restricts_source(a, p, opts, &hook))
    {
        return;
    }
    let mut open = Vec::new();
    let mut example = None;
    for sp in &opts.sensitive_ports {
        let probe = a.flow_space(
            chain,
            &[(chain.universe[0].lo, chain.universe[0].hi)],
            &[(chain.universe[1].lo, chain.universe[1].hi)],
            sp.proto,
            &[(sp.port.into(), sp.port.into())],
        );
        let hit = match lower.find(Some(&probe), budget) {
            Found::Some(hit) => hit,
            Found::None => continue,
            Found::GaveUp => {
                open_questions.add(r.id, "permissive");
                continue;
            }
        };
        {
            open.push(format!(
                "{}/{} ({})",
                sp.port,
                crate::model::proto_name(sp.proto),
                sp.name
            ));
            if example.is_none() {
                example = a.example(&hit);
            }
        }
    }
    if open.is_empty() {
        return;
    }
    out.push(Finding {
        kind: Kind::Permissive,
        severity: Severity::High,
        rule: a.rule_ref(r.id),
        related: Vec::new(),
        message: format!(
            "accepts new connections from any source to sensitive ports: {}",
            open.join(", ")
        ),
        example,
        translated: None,
        hook: Some(chain.hook.clone()),
    });
}

/// DNAT/REDIRECT rules whose translated packets the filter table drops.
fn dnat_findings(a: &Analysis<'_>, out: &mut Vec<Finding>) {
    for nat in a.chains.iter().filter(|c| c.kind == TableKind::Nat) {
        let hook = nat.hook.to_ascii_uppercase();
        for (i, r) in nat.rules.iter().enumerate() {
            let Action::Decide(v) = &r.action else {
                continue;
            };
            if !r.exact {
                continue;
            }
            let Some(Target::Verdict {
                nat_to: Some(to), ..
            }) = a.ruleset.rule(r.id).map(|x| &x.target)
            else {
                continue;
            };
            // Which filter hook sees the translated packet: forwarded unless the new
            // destination is this host (REDIRECT), or locally generated (OUTPUT).
            let filter_hook = match (v, hook.as_str()) {
                (Verdict::Dnat(_), "PREROUTING") => "FORWARD",
                (Verdict::Redirect(_), "PREROUTING") => "INPUT",
                (Verdict::Dnat(_) | Verdict::Redirect(_), "OUTPUT") => "OUTPUT",
                _ => continue,
            };
            let mut reach = r.space.clone();
            for e in &nat.rules[..i] {
                if matches!(e.action, Action::Decide(_)) {
                    reach.subtract(&e.space);
                }
            }
            if reach.is_empty() {
                continue;
            }
            let translated = Analysis::rewrite_dst(&reach, to.addrs, to.ports);
            for filter in a.chains.iter().filter(|c| {
                c.kind == TableKind::Filter
                    && c.hook.eq_ignore_ascii_case(filter_hook)
                    && families_meet(a, c.table, nat.table)
            }) {
                let parts = a.decide_space(filter, &translated);
                let denied: Vec<&Part> = parts
                    .iter()
                    .filter(|p| p.certain && p.verdict.is_deny())
                    .collect();
                let Some(first) = denied.first() else {
                    continue;
                };
                let all = parts.iter().all(|p| p.certain && p.verdict.is_deny());
                let Some(post) = first.space.sample() else {
                    continue;
                };
                // The packet before translation: same except destination and port.
                let mut pre_space = reach.clone();
                for d in [0usize, 2, 3, 5, 6, 7] {
                    pre_space = pre_space.intersect(&Space::from_cube(point_cube(d, post[d])));
                }
                out.push(Finding {
                    kind: Kind::DnatDropped,
                    severity: Severity::High,
                    rule: a.rule_ref(r.id),
                    related: denied
                        .iter()
                        .filter_map(|p| a.decider_ref(filter, p.by))
                        .collect(),
                    message: format!(
                        "{} of the traffic this rule translates ({v}) is then dropped by the filter table's {filter_hook} chain",
                        if all { "all" } else { "some" }
                    ),
                    example: a.example(&pre_space),
                    translated: Some(a.compiler.packet(&post)),
                    hook: Some(nat.hook.clone()),
                });
            }
        }
    }
}

/// Whether packets of one table's family can reach the other's (`inet` holds both).
fn families_meet(a: &Analysis<'_>, x: usize, y: usize) -> bool {
    use crate::model::Family::Inet;
    match (a.ruleset.tables.get(x), a.ruleset.tables.get(y)) {
        (Some(p), Some(q)) => p.family == q.family || p.family == Inet || q.family == Inet,
        _ => false,
    }
}

/// The box fixing dimension `d` to `v`, everything else free.
fn point_cube(d: usize, v: u128) -> crate::space::Cube {
    let mut c = [crate::space::Iv {
        lo: 0,
        hi: u128::MAX,
    }; crate::space::DIMS];
    c[d] = crate::space::Iv::point(v);
    c
}
