//! Resolving the read entities into the route table: references between entities (by name or
//! id), plugin precedence (route > service > global) and service defaults.

use super::*;

/// Where a plugin applies. Kong runs one instance of a plugin per request: the most specific.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Global,
    /// Index into `Tree::services`.
    Service(usize),
    /// Index into the route list built by `all_routes`.
    Route(usize),
}

/// A route with its place in the file and the index of its service, if it has one.
struct RouteEntry<'a> {
    node: &'a RouteNode,
    service: Option<usize>,
}

/// Name and id lookups, which decK references use interchangeably.
struct Index<'a> {
    /// Key -> (position in the entity list, field path).
    by_key: HashMap<&'a str, (usize, &'a str)>,
}

impl<'a> Index<'a> {
    /// Indexes names and ids; a name or id used twice is a problem (Kong's uniqueness rule).
    fn build(
        kind: &str,
        entries: impl Iterator<Item = (&'a str, Option<&'a str>, Option<&'a str>)>,
        problems: &mut Problems,
    ) -> Self {
        let mut by_key: HashMap<&'a str, (usize, &'a str)> = HashMap::new();
        for (i, (path, name, id)) in entries.enumerate() {
            for (attr, key) in [("name", name), ("id", id)] {
                let Some(key) = key else { continue };
                match by_key.get(key) {
                    // An entity whose name equals its own id is not a duplicate.
                    Some(&(first, _)) if first == i => {}
                    Some(&(_, first_path)) => problems.push(
                        field(path, attr),
                        format!("{kind} {attr} '{key}' is already used by {first_path}"),
                    ),
                    None => {
                        by_key.insert(key, (i, path));
                    }
                }
            }
        }
        Index { by_key }
    }

    fn find(&self, reference: &EntityRef) -> Option<usize> {
        self.by_key.get(reference.key()).map(|&(i, _)| i)
    }
}

fn display_name(name: Option<&String>, id: Option<&String>, path: &str) -> String {
    name.or(id).cloned().unwrap_or_else(|| path.to_string())
}

/// Resolves references and plugin precedence into the route table.
pub(super) fn resolve(tree: &Tree, problems: &mut Problems) -> Vec<RouteSpec> {
    let services = Index::build(
        "service",
        tree.services.iter().map(|s| {
            (
                s.path.as_str(),
                s.service.name.as_deref(),
                s.service.id.as_deref(),
            )
        }),
        problems,
    );
    let routes = all_routes(tree, &services, problems);
    let route_index = Index::build(
        "route",
        routes.iter().map(|r| {
            (
                r.node.path.as_str(),
                r.node.route.name.as_deref(),
                r.node.route.id.as_deref(),
            )
        }),
        problems,
    );

    let consumers = Index::build(
        "consumer",
        tree.consumers.iter().map(|c| {
            (
                c.path.as_str(),
                c.consumer.username.as_deref(),
                c.consumer.id.as_deref(),
            )
        }),
        problems,
    );
    check_unique_keys(&tree.consumers, problems);

    let mut scoped: Vec<Scoped> = Vec::new();
    for (s, node) in tree.services.iter().enumerate() {
        for plugin in &node.plugins {
            refuse_references(plugin, problems);
            scoped.push((Scope::Service(s), None, plugin));
        }
    }
    for (r, entry) in routes.iter().enumerate() {
        for plugin in &entry.node.plugins {
            refuse_references(plugin, problems);
            scoped.push((Scope::Route(r), None, plugin));
        }
    }
    for plugin in &tree.plugins {
        let consumer = match &plugin.plugin.consumer {
            None => None,
            Some(reference) => match consumers.find(reference) {
                Some(c) => Some(c),
                None => {
                    problems.push(
                        field(&plugin.path, "consumer"),
                        format!("unknown consumer '{}'", reference.key()),
                    );
                    continue;
                }
            },
        };
        if let Some(scope) = top_level_scope(plugin, &services, &route_index, &routes, problems) {
            scoped.push((scope, consumer, plugin));
        }
    }
    for (c, node) in tree.consumers.iter().enumerate() {
        for plugin in &node.plugins {
            if let Some(scope) = top_level_scope(plugin, &services, &route_index, &routes, problems)
            {
                scoped.push((scope, Some(c), plugin));
            }
        }
    }

    let ai = active_by_scope(&scoped, Kind::Ai, tree, &routes, problems);
    let prometheus = active_by_scope(&scoped, Kind::Prometheus, tree, &routes, problems);
    let key_auth = active_by_scope(&scoped, Kind::KeyAuth, tree, &routes, problems);
    let limits = active_by_scope(&scoped, Kind::RateLimit, tree, &routes, problems);
    for (_, _, node) in &scoped {
        if let Some(PluginConfig::KeyAuth(config)) = &node.config {
            check_anonymous(config, &node.path, &consumers, problems);
        }
    }
    routes
        .iter()
        .enumerate()
        .filter(|(_, entry)| {
            entry
                .service
                .is_none_or(|s| tree.services[s].service.enabled)
        })
        .map(|(r, entry)| {
            let route = &entry.node.route;
            let plugin = applying(&ai, r, entry.service, None);
            let prometheus =
                applying(&prometheus, r, entry.service, None).and_then(|p| match &p.config {
                    Some(PluginConfig::Prometheus(config)) => Some(config.clone()),
                    _ => None,
                });
            let rate_limit = |node: &PluginNode| match &node.config {
                Some(PluginConfig::RateLimit(config)) => Some(RateLimitSpec {
                    config: config.clone(),
                    path: node.path.clone(),
                }),
                _ => None,
            };
            RouteSpec {
                name: display_name(route.name.as_ref(), route.id.as_ref(), &entry.node.path),
                paths: route.paths.clone(),
                methods: route.methods.clone(),
                hosts: route.hosts.clone(),
                headers: route
                    .headers
                    .iter()
                    .map(|(name, values)| (name.to_ascii_lowercase(), values.clone()))
                    .collect(),
                strip_path: route.strip_path,
                service: entry.service.map(|s| service_spec(&tree.services[s])),
                plugin: plugin.and_then(|p| match &p.config {
                    Some(PluginConfig::Ai(ai)) => Some(ai.clone()),
                    _ => None,
                }),
                plugin_path: plugin.map(|p| p.path.clone()),
                prometheus,
                key_auth: applying(&key_auth, r, entry.service, None).and_then(|p| {
                    match &p.config {
                        Some(PluginConfig::KeyAuth(config)) => Some(config.clone()),
                        _ => None,
                    }
                }),
                rate_limit: applying(&limits, r, entry.service, None).and_then(rate_limit),
                // A consumer-scoped instance beats the route's, service's and global one.
                consumer_rate_limits: (0..tree.consumers.len())
                    .filter_map(|c| {
                        applying(&limits, r, entry.service, Some(c))
                            .and_then(rate_limit)
                            .map(|spec| (c, spec))
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A plugin with where it applies and the consumer it is restricted to.
type Scoped<'a> = (Scope, Option<usize>, &'a PluginNode);

/// The instance restricted to `consumer` (or to none) that applies to route `r`: route beats
/// service beats global.
fn applying<'a>(
    active: &HashMap<(Scope, Option<usize>), &'a PluginNode>,
    r: usize,
    service: Option<usize>,
    consumer: Option<usize>,
) -> Option<&'a PluginNode> {
    [
        Some(Scope::Route(r)),
        service.map(Scope::Service),
        Some(Scope::Global),
    ]
    .into_iter()
    .flatten()
    .find_map(|scope| active.get(&(scope, consumer)).copied())
}

/// The enabled instance of one plugin kind per scope. Only one instance of a kind may sit on a
/// scope (Kong's uniqueness rule, which counts disabled instances too); `ai-proxy` and
/// `ai-proxy-advanced` are one kind, since a route is proxied by one of them.
fn active_by_scope<'a>(
    scoped: &[Scoped<'a>],
    kind: Kind,
    tree: &Tree,
    routes: &[RouteEntry<'_>],
    problems: &mut Problems,
) -> HashMap<(Scope, Option<usize>), &'a PluginNode> {
    let mut first_at: HashMap<(Scope, Option<usize>), &str> = HashMap::new();
    let mut active: HashMap<(Scope, Option<usize>), &PluginNode> = HashMap::new();
    for &(scope, consumer, node) in scoped {
        if kind_of(&node.plugin.name) != Some(kind) {
            continue;
        }
        let slot = (scope, consumer);
        if let Some(first) = first_at.get(&slot) {
            let mut target = match scope {
                Scope::Global => "globally".to_string(),
                Scope::Service(s) => format!("on {}", tree.services[s].path),
                Scope::Route(r) => format!("on {}", routes[r].node.path),
            };
            if let Some(c) = consumer {
                target.push_str(&format!(" for {}", tree.consumers[c].path));
            }
            problems.push(
                node.path.as_str(),
                format!(
                    "duplicate '{}' plugin {target}: already configured at {first}",
                    node.plugin.name
                ),
            );
            continue;
        }
        first_at.insert(slot, &node.path);
        if node.plugin.enabled {
            active.insert(slot, node);
        }
    }
    active
}

/// key-auth's `anonymous` names a consumer by username or id.
fn check_anonymous(config: &KeyAuthConfig, path: &str, consumers: &Index, problems: &mut Problems) {
    if let Some(anonymous) = &config.anonymous {
        if consumers.find(&EntityRef(anonymous.clone())).is_none() {
            problems.push(
                field(&field(path, "config"), "anonymous"),
                format!("unknown consumer '{anonymous}'"),
            );
        }
    }
}

/// Kong keeps key-auth keys unique: a key must name one consumer. The key is never echoed.
fn check_unique_keys(consumers: &[ConsumerNode], problems: &mut Problems) {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for node in consumers {
        for (k, credential) in node.consumer.keyauth_credentials.iter().enumerate() {
            let path = item(&field(&node.path, "keyauth_credentials"), k);
            match seen.get(credential.key.as_str()) {
                Some(first) => problems.push(
                    field(&path, "key"),
                    format!("this key is already used by {first}"),
                ),
                None => {
                    seen.insert(&credential.key, path);
                }
            }
        }
    }
}

pub(super) fn consumer_spec(node: &ConsumerNode) -> ConsumerSpec {
    let consumer = &node.consumer;
    ConsumerSpec {
        username: consumer.username.clone(),
        custom_id: consumer.custom_id.clone(),
        id: consumer.id.clone(),
        keys: consumer
            .keyauth_credentials
            .iter()
            .map(|c| c.key.clone())
            .collect(),
    }
}

/// Nested routes first (they belong to their service), then top-level routes with their
/// `service` reference resolved.
fn all_routes<'a>(
    tree: &'a Tree,
    services: &Index,
    problems: &mut Problems,
) -> Vec<RouteEntry<'a>> {
    let mut routes = Vec::new();
    for (s, service) in tree.services.iter().enumerate() {
        for node in &service.routes {
            if let Some(reference) = &node.route.service {
                if services.find(reference) != Some(s) {
                    problems.push(
                        field(&node.path, "service"),
                        "a route nested under a service belongs to that service: remove 'service'",
                    );
                }
            }
            routes.push(RouteEntry {
                node,
                service: Some(s),
            });
        }
    }
    for node in &tree.routes {
        let service = node.route.service.as_ref().and_then(|reference| {
            let found = services.find(reference);
            if found.is_none() {
                problems.push(
                    field(&node.path, "service"),
                    format!("unknown service '{}'", reference.key()),
                );
            }
            found
        });
        routes.push(RouteEntry { node, service });
    }
    routes
}

/// A plugin nested under a service or route is scoped by its position.
fn refuse_references(node: &PluginNode, problems: &mut Problems) {
    for (name, set) in [
        ("service", node.plugin.service.is_some()),
        ("route", node.plugin.route.is_some()),
    ] {
        if set {
            problems.push(
                field(&node.path, name),
                "a nested plugin is scoped by the entity it is nested in: remove this reference",
            );
        }
    }
}

/// A top-level plugin attaches to the route or service it references, else applies globally.
/// A plugin naming both a route and a service applies to that route, which must belong to it.
fn top_level_scope(
    node: &PluginNode,
    services: &Index,
    routes: &Index,
    route_list: &[RouteEntry<'_>],
    problems: &mut Problems,
) -> Option<Scope> {
    let service = match &node.plugin.service {
        None => None,
        Some(reference) => match services.find(reference) {
            Some(s) => Some(s),
            None => {
                problems.push(
                    field(&node.path, "service"),
                    format!("unknown service '{}'", reference.key()),
                );
                return None;
            }
        },
    };
    let Some(reference) = &node.plugin.route else {
        return Some(service.map_or(Scope::Global, Scope::Service));
    };
    let Some(r) = routes.find(reference) else {
        problems.push(
            field(&node.path, "route"),
            format!("unknown route '{}'", reference.key()),
        );
        return None;
    };
    if service.is_some_and(|s| route_list[r].service != Some(s)) {
        problems.push(
            field(&node.path, "route"),
            "the route does not belong to the plugin's service",
        );
        return None;
    }
    Some(Scope::Route(r))
}

fn service_spec(node: &ServiceNode) -> ServiceSpec {
    let service = &node.service;
    ServiceSpec {
        name: display_name(service.name.as_ref(), service.id.as_ref(), &node.path),
        url: node.url.clone(),
        connect_timeout_ms: service.connect_timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
        read_timeout_ms: service.read_timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
        write_timeout_ms: service.write_timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
        retries: service.retries.unwrap_or(DEFAULT_RETRIES),
    }
}
