//! NATS authorization generated from the component declarations.
//!
//! Each component connects as a NATS user of its own name and may publish and subscribe
//! exactly where its [`Component`] declaration says: the endpoints it serves (replies go
//! out through `allow_responses`, never through a blanket `_INBOX.>`), the endpoints it
//! calls, the subjects it publishes and hears, and the JetStream API of its own streams and
//! buckets only. Replies to its own requests arrive under an inbox prefix no other
//! component may read ([`inbox_prefix`]), so one component cannot see another's replies
//! (login tokens included). No component may purge a stream or delete one other than a
//! cache bucket it owns; reading the revocations bucket does not grant writing it.
//!
//! [`accounts_conf`] renders the whole set as a `nats-server` configuration fragment
//! (`mosaic nats config`, and the committed `nats/accounts.conf`, which a test keeps equal
//! to the output).

use crate::component::Component;
use mosaic_api::endpoint::Endpoint as _;
use mosaic_api::stream::{KvSpec, KvStorage, REVOCATIONS};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The inbox prefix of `component`'s connections: replies to its requests (and the
/// deliveries of its JetStream consumers) arrive under it, and only it may subscribe there.
pub fn inbox_prefix(component: &str) -> String {
    format!("_INBOX_{component}")
}

/// The environment variable that holds the NATS password of `user` in the generated
/// configuration (`MOSAIC_NATS_<USER>_PASSWORD`).
pub fn password_env(user: &str) -> String {
    format!("MOSAIC_NATS_{}_PASSWORD", user.to_ascii_uppercase().replace('-', "_"))
}

/// The NATS user of operators and of `mosaic admin`: every permission.
pub const ADMIN_USER: &str = "admin";

/// The user a leaf node (an edge region) connects to the home cluster as: it carries the
/// traffic of the region's edges, so it gets the edge's permissions.
pub const LEAF_USER: &str = "leaf";

/// What one NATS user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Subjects (patterns) it may publish to, besides replies.
    pub publish: BTreeSet<String>,
    /// Subjects (patterns) it may subscribe to.
    pub subscribe: BTreeSet<String>,
    /// Whether it may reply to requests it received (it serves endpoints).
    pub responds: bool,
}

impl Grant {
    fn publish(&mut self, subject: impl Into<String>) {
        self.publish.insert(subject.into());
    }

    fn subscribe(&mut self, subject: impl Into<String>) {
        self.subscribe.insert(subject.into());
    }

    /// Full use of a stream the component declares: ensure it exists, read it, consume it
    /// through its own consumers, acknowledge, answer flow control. Never purge or delete.
    fn stream(&mut self, name: &str) {
        for api in ["STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE", "STREAM.MSG.GET"] {
            self.publish(format!("$JS.API.{api}.{name}"));
        }
        self.read_messages(name);
    }

    /// Reading a stream's messages: direct gets and consumers (durable, named or ordered).
    fn read_messages(&mut self, name: &str) {
        self.publish(format!("$JS.API.DIRECT.GET.{name}"));
        self.publish(format!("$JS.API.DIRECT.GET.{name}.>"));
        self.publish(format!("$JS.API.CONSUMER.CREATE.{name}"));
        for api in ["CONSUMER.CREATE", "CONSUMER.DURABLE.CREATE", "CONSUMER.INFO", "CONSUMER.MSG.NEXT"] {
            self.publish(format!("$JS.API.{api}.{name}.>"));
        }
        self.publish(format!("$JS.ACK.{name}.>"));
        self.publish(format!("$JS.FC.{name}.>"));
    }

    /// A bucket the component declares: open (creating or updating) it, read, write,
    /// compare-and-set and watch its keys. A cache bucket may also be deleted, to recreate
    /// it when its storage kind changed.
    fn bucket(&mut self, spec: &KvSpec) {
        let stream = format!("KV_{}", spec.bucket);
        self.stream(&stream);
        self.publish(format!("$KV.{}.>", spec.bucket));
        if matches!(spec.storage, KvStorage::Cache { .. }) {
            self.publish(format!("$JS.API.STREAM.DELETE.{stream}"));
        }
    }

    /// A bucket the component only reads and watches.
    fn read_bucket(&mut self, spec: &KvSpec) {
        let stream = format!("KV_{}", spec.bucket);
        self.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        self.publish(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        self.read_messages(&stream);
    }
}

/// What `component` may do on NATS, from its declaration and those of the `others` that
/// run beside it.
pub fn grant(component: &Component, others: &[&Component]) -> Grant {
    let mut g = Grant::default();
    let inbox = inbox_prefix(component.name);
    g.subscribe(format!("{inbox}.>"));
    // Account-level JetStream information (limits, usage); it names no stream's content.
    g.publish("$JS.API.INFO");
    // Discovery: whether a service answers (readiness), never its traffic.
    g.publish("$SRV.PING.>");

    for subject in component.serves {
        g.subscribe(*subject);
    }
    if !component.serves.is_empty() {
        g.responds = true;
        // A reply to a request accepted just before a drain leaves on the instance's main
        // connection, which did not receive the request (see crate::service::Responder), so
        // `allow_responses` does not cover it: such replies may go to the inboxes of the
        // components that call this one, and no others.
        for caller in others.iter().filter(|o| o.name != component.name) {
            if caller.calls.iter().any(|c| component.serves.contains(c)) {
                g.publish(format!("{}.>", inbox_prefix(caller.name)));
            }
        }
        // The micro service API: PING, INFO and STATS for all, by name, by instance.
        g.subscribe("$SRV.*");
        g.subscribe(format!("$SRV.*.{}", component.name));
        g.subscribe(format!("$SRV.*.{}.*", component.name));
    }
    for subject in component.instances {
        g.subscribe(format!("{subject}.*"));
        g.publish(format!("{subject}.*"));
        g.responds = true;
    }
    for subject in component.calls {
        g.publish(*subject);
    }
    for subject in component.publishes {
        g.publish(*subject);
    }
    for subject in component.subscribes {
        g.subscribe(*subject);
    }
    for spec in component.streams {
        g.stream(spec.name);
    }
    for spec in component.buckets {
        g.bucket(spec);
    }
    // Every component verifies its callers' tokens (crate::identity): it fetches the
    // signing keys from the user service and watches the revocations bucket.
    g.publish(mosaic_api::user::GetJwks::SUBJECT);
    if !component.buckets.iter().any(|b| b.bucket == REVOCATIONS.bucket) {
        g.read_bucket(&REVOCATIONS);
    }
    g
}

/// The `accounts` block of a `nats-server` configuration for `components`: one account
/// (`MOSAIC`, JetStream enabled) with a user per component, the operators' `admin` and the
/// leaf user (the edge's permissions), and the system account. Passwords are read from the
/// environment ([`password_env`]) so the text holds no secret.
pub fn accounts_conf(components: &[&Component]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Generated by `mosaic nats config --accounts` from the component declarations; do not\n\
         # edit (a test fails when this copy differs from the output). Each component connects\n\
         # as the user of its name, with the password from the environment variable named\n\
         # next to it, and may use NATS only as its declaration says.\n\n",
    );
    out.push_str("accounts: {\n  MOSAIC: {\n    jetstream: enabled\n    users: [\n");
    for component in components {
        user(&mut out, component.name, Some(&grant(component, components)));
    }
    if let Some(edge) = components.iter().find(|c| c.name == "edge") {
        user(&mut out, LEAF_USER, Some(&grant(edge, components)));
    }
    out.push_str("      # Operators (`mosaic admin`, the `nats` CLI): every permission.\n");
    user(&mut out, ADMIN_USER, None);
    out.push_str("    ]\n  }\n");
    let _ = writeln!(out, "  SYS: {{ users: [ {{ user: sys, password: ${} }} ] }}", password_env("sys"));
    out.push_str("}\nsystem_account: SYS\n");
    out
}

fn user(out: &mut String, name: &str, grant: Option<&Grant>) {
    let _ = writeln!(out, "      {{\n        user: {name}, password: ${}", password_env(name));
    if let Some(g) = grant {
        out.push_str("        permissions: {\n");
        let _ = writeln!(out, "          publish: {{ allow: [\n{}\n          ] }}", list(&g.publish));
        let _ = writeln!(out, "          subscribe: {{ allow: [\n{}\n          ] }}", list(&g.subscribe));
        if g.responds {
            out.push_str("          allow_responses: true\n");
        }
        out.push_str("        }\n");
    }
    out.push_str("      }\n");
}

fn list(subjects: &BTreeSet<String>) -> String {
    subjects.iter().map(|s| format!("            \"{s}\"")).collect::<Vec<_>>().join(",\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::check;
    use mosaic_api::stream::{EVENTS_USER, IDEMPOTENCY};

    struct Nothing;
    impl<'de> serde::Deserialize<'de> for Nothing {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Nothing)
        }
    }
    impl crate::component::Section for Nothing {}

    const SERVICE: Component = Component {
        name: "probe",
        about: "test",
        migrations: None,
        serves: &["mosaic.probe.v1.get"],
        instances: &["mosaic.probe.v1.order"],
        calls: &["mosaic.user.v1.profile"],
        publishes: &["events.user.>"],
        subscribes: &["notices.probe"],
        streams: &[&EVENTS_USER],
        buckets: &[&IDEMPOTENCY],
        check: check::<Nothing>,
        start: |_| Box::pin(async { anyhow::bail!("not started in tests") }),
    };

    #[test]
    fn a_grant_holds_the_declaration_and_nothing_wider() {
        let g = grant(&SERVICE, &[&SERVICE]);
        for p in ["mosaic.user.v1.profile", "events.user.>", "mosaic.probe.v1.order.*", "$KV.idempotency.>"] {
            assert!(g.publish.contains(p), "{p} missing from {:?}", g.publish);
        }
        for s in ["mosaic.probe.v1.get", "notices.probe", "_INBOX_probe.>", "$SRV.*.probe"] {
            assert!(g.subscribe.contains(s), "{s} missing from {:?}", g.subscribe);
        }
        assert!(g.responds);
        // Nothing that reads another's replies or removes what others rely on.
        for all in [&g.publish, &g.subscribe] {
            for s in all {
                assert!(!s.starts_with("_INBOX."), "{s}");
                assert!(!s.contains("PURGE"), "{s}");
                assert!(!matches!(s.as_str(), ">" | "$JS.API.>" | "$KV.>" | "$JS.>"), "{s}");
            }
        }
        assert!(!g.publish.iter().any(|s| s.contains("STREAM.DELETE")), "a file bucket is never deleted");
    }

    #[test]
    fn revocations_are_read_but_not_written_by_those_that_do_not_own_them() {
        let g = grant(&SERVICE, &[&SERVICE]);
        assert!(g.publish.contains("$JS.API.STREAM.INFO.KV_revocations"));
        assert!(g.publish.contains("$JS.API.CONSUMER.CREATE.KV_revocations"));
        assert!(!g.publish.iter().any(|s| s.starts_with("$KV.revocations")));
        assert!(!g.publish.contains("$JS.API.STREAM.UPDATE.KV_revocations"));
        assert!(!g.publish.contains("$JS.API.STREAM.CREATE.KV_revocations"));
    }

    #[test]
    fn the_configuration_names_every_user_and_no_secret() {
        let conf = accounts_conf(&[&SERVICE]);
        assert!(conf.contains("user: probe, password: $MOSAIC_NATS_PROBE_PASSWORD"));
        assert!(conf.contains("user: admin, password: $MOSAIC_NATS_ADMIN_PASSWORD"));
        assert!(conf.contains("allow_responses: true"));
        assert!(!conf.contains("user: leaf"), "no leaf user without an edge");
    }
}
