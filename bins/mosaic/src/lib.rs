//! The composition root: every Mosaic component, in start order.
//!
//! `mosaic up`, `mosaic serve <name>`, `mosaic migrate` and the end-to-end test world all
//! iterate [`COMPONENTS`]; none names a service by hand. A new service is one crate that
//! exports its [`Component`] plus one line here.

use mosaic_mesh::Component;

pub mod nats;

/// Every component, in the order they start: services first (user before the services
/// that ask it for profiles), the edge last, so it takes clients only once everything
/// behind it answers. They stop in the reverse order.
pub static COMPONENTS: &[&Component] = &[
    &mosaic_user::COMPONENT,
    &mosaic_content::COMPONENT,
    &mosaic_interaction::COMPONENT,
    &mosaic_feed::COMPONENT,
    &mosaic_messaging::COMPONENT,
    &mosaic_notification::COMPONENT,
    &mosaic_analytics::COMPONENT,
    &mosaic_edge::COMPONENT,
];

/// The component called `name`.
pub fn component(name: &str) -> Option<&'static Component> {
    COMPONENTS.iter().copied().find(|c| c.name == name)
}

/// The names of every component, in start order.
pub fn names() -> impl Iterator<Item = &'static str> {
    COMPONENTS.iter().map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_every_service_the_edge_reports_is_listed() {
        let names: HashSet<_> = names().collect();
        assert_eq!(names.len(), COMPONENTS.len(), "duplicate component names");
        for service in mosaic_edge::SERVICES {
            assert!(names.contains(service), "{service} is reported by /readyz but not in COMPONENTS");
        }
        assert_eq!(COMPONENTS.last().map(|c| c.name), Some(mosaic_edge::COMPONENT.name), "the edge starts last");
    }

    #[test]
    fn every_call_and_instance_endpoint_is_served_by_a_component() {
        let served: HashSet<&str> = COMPONENTS.iter().flat_map(|c| c.serves.iter().copied()).collect();
        for c in COMPONENTS {
            for call in c.calls {
                assert!(served.contains(call), "{} calls {call}, which no component serves", c.name);
                assert!(!c.serves.contains(call), "{} declares a call of its own endpoint {call}", c.name);
            }
            for endpoint in c.instances {
                assert!(endpoint.starts_with(&format!("mosaic.{}.v1.", c.name)), "{} declares {endpoint}", c.name);
            }
        }
    }

    #[test]
    fn every_subscription_to_an_event_or_notice_has_a_publisher() {
        for c in COMPONENTS {
            for pattern in c.subscribes {
                let published = COMPONENTS
                    .iter()
                    .flat_map(|p| p.publishes.iter())
                    .any(|p| p == pattern || mosaic_api::subject::matches(pattern, p));
                assert!(published, "{} subscribes to {pattern}, which no component publishes", c.name);
            }
        }
    }

    #[test]
    fn every_declared_endpoint_belongs_to_its_component_and_to_one_only() {
        let mut seen = HashSet::new();
        for c in COMPONENTS {
            for subject in c.serves {
                assert!(subject.starts_with(&format!("mosaic.{}.v1.", c.name)), "{} declares {subject}", c.name);
                assert!(seen.insert(*subject), "{subject} declared twice");
            }
        }
    }
}
