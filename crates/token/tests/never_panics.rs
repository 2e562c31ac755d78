//! Arbitrary bytes and mutated genuine tokens never panic and never validate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::OnceLock;

use intraport_token::issuer::IssuerMatch;
use intraport_token::{Algorithm, KeySet, Policy, jwt};
use proptest::prelude::*;
use support::*;

struct World {
    keys: KeySet,
    token: String,
    policy: Policy,
    issuer: IssuerMatch,
    now: u64,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let key = TestKey::new("k1");
        let now = now();
        let token = key.token(&key.header(), &v2_app_claims(now));
        let keys = KeySet::from_json(
            jwks(&[key.jwk(Some(&v2_issuer(TENANT)))]).as_bytes(),
            &[Algorithm::RS256],
        )
        .unwrap();
        World {
            keys,
            token,
            policy: Policy {
                audiences: vec![AUDIENCE.into()],
                ..Policy::default()
            },
            issuer: IssuerMatch::parse(&v2_issuer(TENANT)),
            now,
        }
    })
}

/// The whole synchronous check, as the provider runs it with the key the token names.
fn check(token: &str) -> bool {
    let w = world();
    let Ok(parsed) = jwt::parse(token, &w.policy) else {
        return false;
    };
    let Some(key) = parsed
        .kid
        .as_deref()
        .and_then(|k| w.keys.by_kid(k))
        .cloned()
    else {
        return false;
    };
    jwt::verify(token, parsed, &key, &w.issuer, None, &w.policy, w.now).is_ok()
}

#[test]
fn the_genuine_token_validates() {
    assert!(check(&world().token));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_validate(s in ".{0,600}") {
        prop_assert!(!check(&s));
    }

    #[test]
    fn arbitrary_bytes_as_jwks_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = KeySet::from_json(&b, &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256]);
    }

    #[test]
    fn three_random_base64_parts_never_validate(
        h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{0,400}"
    ) {
        let t = format!("{}.{}.{}", h, p, s);
        prop_assert!(!check(&t));
    }

    #[test]
    fn a_mutated_genuine_token_never_validates(
        pos in any::<prop::sample::Index>(),
        c in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec())
    ) {
        let t = world().token.as_bytes();
        let i = pos.index(t.len());
        prop_assume!(t[i] != c);
        let mut m = t.to_vec();
        m[i] = c;
        let m = String::from_utf8(m).unwrap();
        prop_assert!(!check(&m), "mutation at {} to {:?} validated", i, c as char);
    }

    #[test]
    fn a_truncated_or_extended_genuine_token_never_validates(cut in 0usize..2000, extra in "[A-Za-z0-9_.-]{1,8}") {
        let t = &world().token;
        let cut = cut % t.len();
        prop_assert!(!check(&t[..cut]));
        let longer = format!("{}{}", t, extra);
        prop_assert!(!check(&longer));
    }
}
