//! RBAC for the one client identity the server knows: a list of PolicyRules (as in a
//! ClusterRole) that the bearer token is limited to.
//!
//! "Using RBAC Authorization" in the Kubernetes docs: a request is allowed when some rule
//! matches its verb, API group and resource (`pods/status` for a subresource; `*` matches
//! anything, `*/status` any resource's status), and, when the rule lists `resourceNames`, the
//! request names one of them. Requests without a name in the URL (list, watch, create,
//! deletecollection) only match rules without resourceNames, except list and watch with a
//! `metadata.name=` field selector, which the authorizer sees as naming that object.
//! Discovery paths (`/api`, `/apis`, `/version`) are open to every authenticated client, as
//! the `system:discovery` binding makes them.

use serde::Deserialize;
use serde_json::Value;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// API groups ("" for core, "*" for all).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, or "*".
    #[serde(default)]
    pub resources: Vec<String>,
    /// Verbs: get, list, watch, create, update, patch, delete, deletecollection, or "*".
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Object names the rule is limited to; empty means all.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl PolicyRule {
    /// A rule from string slices, for tests.
    pub fn new(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            api_groups: own(api_groups),
            resources: own(resources),
            verbs: own(verbs),
            resource_names: Vec::new(),
        }
    }

    /// The same rule limited to the given object names.
    pub fn with_names(mut self, names: &[&str]) -> PolicyRule {
        self.resource_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn allows(&self, a: &Attributes) -> bool {
        let verb_ok = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        let group_ok = self.api_groups.iter().any(|g| g == "*" || *g == a.group);
        let resource_ok = self.resources.iter().any(|r| match &a.subresource {
            None => r == "*" || *r == a.resource,
            Some(sub) => {
                r == "*" || *r == format!("{}/{sub}", a.resource) || *r == format!("*/{sub}")
            }
        });
        let name_ok = self.resource_names.is_empty()
            || a.name
                .as_ref()
                .is_some_and(|n| self.resource_names.iter().any(|r| r == n));
        verb_ok && group_ok && resource_ok && name_ok
    }
}

/// What a resource request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// Object name, when the request names one.
    pub name: Option<String>,
}

/// Whether any rule allows the request.
pub fn allowed(rules: &[PolicyRule], attributes: &Attributes) -> bool {
    rules.iter().any(|r| r.allows(attributes))
}

/// The rules of every ClusterRole and Role in a (multi-document) YAML manifest, such as a
/// rendered Helm chart's RBAC template.
pub fn rules_from_manifest(yaml: &str) -> Result<Vec<PolicyRule>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    let mut rules = Vec::new();
    for doc in docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        if let Some(r) = doc.get("rules") {
            let r: Vec<PolicyRule> =
                serde_json::from_value(r.clone()).map_err(|e| format!("{kind} rules: {e}"))?;
            rules.extend(r);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, name: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: name.map(Into::into),
        }
    }

    #[test]
    fn rules_match_verb_group_resource_and_names() {
        let rules = vec![
            PolicyRule::new(
                &["crd.projectcalico.org"],
                &["ippools"],
                &["get", "list", "watch"],
            ),
            PolicyRule::new(&[""], &["nodes"], &["patch"]).with_names(&["n1"]),
            PolicyRule::new(&[""], &["pods/status"], &["update"]),
        ];
        assert!(allowed(
            &rules,
            &attrs("list", "crd.projectcalico.org", "ippools", None)
        ));
        assert!(!allowed(
            &rules,
            &attrs("create", "crd.projectcalico.org", "ippools", None)
        ));
        assert!(!allowed(&rules, &attrs("list", "", "ippools", None)));
        assert!(allowed(&rules, &attrs("patch", "", "nodes", Some("n1"))));
        assert!(!allowed(&rules, &attrs("patch", "", "nodes", Some("n2"))));
        assert!(!allowed(&rules, &attrs("patch", "", "nodes", None)));
        let mut status = attrs("update", "", "pods", Some("p"));
        assert!(!allowed(&rules, &status));
        status.subresource = Some("status".into());
        assert!(allowed(&rules, &status));
        let all = vec![PolicyRule::new(&["*"], &["*"], &["*"])];
        assert!(allowed(&all, &status));
    }

    #[test]
    fn rules_from_a_cluster_role_manifest() {
        let yaml = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n\
                    rules:\n- apiGroups: [\"\"]\n  resources: [nodes]\n  verbs: [get, patch]\n  resourceNames: [n1]\n";
        let rules = rules_from_manifest(yaml).unwrap();
        assert_eq!(
            rules,
            vec![PolicyRule::new(&[""], &["nodes"], &["get", "patch"]).with_names(&["n1"])]
        );
    }
}
