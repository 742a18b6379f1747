//! Kong's route matching (the `traditional_compatible` router): plain paths are string-level
//! prefixes, `~` paths are regexes anchored at the start, then methods and hosts.
//!
//! Priority among matches, as Kong orders them: more attribute kinds configured first, then
//! routes with plain hosts, then regex paths before prefixes, then the longest prefix.

use regex::Regex;

use crate::config::load::RouteSpec;

/// Where a request goes, and what the path told us (named regex captures for templates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub captures: Vec<(String, String)>,
    /// Bytes of the path the route's path rule matched (the prefix, or the regex match);
    /// REST route types forward what follows.
    pub matched_len: usize,
}

#[derive(Debug)]
enum PathRule {
    Any,
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Entry {
    route: usize,
    path: PathRule,
    methods: Vec<String>,
    hosts: Vec<HostRule>,
    headers: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
enum HostRule {
    Exact(String),
    /// `*.example.com`
    Suffix(String),
    /// `example.*`
    Prefix(String),
}

impl HostRule {
    fn parse(host: &str) -> HostRule {
        let host = host.to_ascii_lowercase();
        if let Some(rest) = host.strip_prefix('*') {
            HostRule::Suffix(rest.to_string())
        } else if let Some(rest) = host.strip_suffix('*') {
            HostRule::Prefix(rest.to_string())
        } else {
            HostRule::Exact(host)
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Exact(h) => h == host,
            HostRule::Suffix(s) => host.ends_with(s.as_str()),
            HostRule::Prefix(p) => host.starts_with(p.as_str()),
        }
    }

    fn is_plain(&self) -> bool {
        matches!(self, HostRule::Exact(_))
    }
}

/// The compiled routing table of one config generation. Immutable and shared by all workers.
#[derive(Debug, Default)]
pub struct Router {
    entries: Vec<Entry>,
}

impl Router {
    /// Compiles every route's paths. Paths were validated at load, so a regex that fails to
    /// compile here is reported as an error string for the reload to reject.
    pub fn new(routes: &[RouteSpec]) -> Result<Router, String> {
        let mut entries = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let methods: Vec<String> = route
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            let hosts: Vec<HostRule> = route.hosts.iter().map(|h| HostRule::parse(h)).collect();
            let mut push = |path| {
                entries.push(Entry {
                    route: index,
                    path,
                    methods: methods.clone(),
                    hosts: hosts.clone(),
                    headers: route.headers.clone(),
                })
            };
            if route.paths.is_empty() {
                push(PathRule::Any);
            }
            for path in &route.paths {
                let rule = match path.strip_prefix('~') {
                    Some(pattern) => {
                        // Kong anchors regex paths at the start of the path.
                        let anchored = format!("^(?:{pattern})");
                        PathRule::Regex(Regex::new(&anchored).map_err(|e| {
                            format!("route '{}': invalid regex path '{path}': {e}", route.name)
                        })?)
                    }
                    None => PathRule::Prefix(path.clone()),
                };
                push(rule);
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(priority(e)));
        Ok(Router { entries })
    }

    /// The best route for a request, per Kong's priority rules. `header` looks a request
    /// header up by its lower-case name.
    pub fn find<'h>(
        &self,
        method: &str,
        host: Option<&str>,
        path: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Option<RouteMatch> {
        let host = host.map(|h| {
            // The Host header may carry a port; Kong matches hosts without it.
            h.rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(name, _)| name)
                .to_ascii_lowercase()
        });
        self.entries.iter().find_map(|entry| {
            if !entry.methods.is_empty() && !entry.methods.iter().any(|m| m == method) {
                return None;
            }
            if !entry.hosts.is_empty() {
                let host = host.as_deref()?;
                if !entry.hosts.iter().any(|h| h.matches(host)) {
                    return None;
                }
            }
            // Kong compares header values case-insensitively.
            let headers_match = entry.headers.iter().all(|(name, values)| {
                header(name).is_some_and(|v| values.iter().any(|w| w.eq_ignore_ascii_case(v)))
            });
            if !headers_match {
                return None;
            }
            let (captures, matched_len) = match &entry.path {
                PathRule::Any => (Vec::new(), 0),
                PathRule::Prefix(prefix) => {
                    if !path.starts_with(prefix.as_str()) {
                        return None;
                    }
                    (Vec::new(), prefix.len())
                }
                PathRule::Regex(re) => {
                    let caps = re.captures(path)?;
                    let names = re
                        .capture_names()
                        .flatten()
                        .filter_map(|name| {
                            caps.name(name)
                                .map(|m| (name.to_string(), m.as_str().to_string()))
                        })
                        .collect();
                    (names, caps.get(0).map_or(0, |m| m.end()))
                }
            };
            Some(RouteMatch {
                route: entry.route,
                captures,
                matched_len,
            })
        })
    }
}

/// Kong's ordering key, most significant first.
fn priority(e: &Entry) -> (usize, bool, usize, bool, usize) {
    let kinds = usize::from(!e.methods.is_empty())
        + usize::from(!e.hosts.is_empty())
        + usize::from(!e.headers.is_empty())
        + usize::from(!matches!(e.path, PathRule::Any));
    let plain_hosts = !e.hosts.is_empty() && e.hosts.iter().all(HostRule::is_plain);
    let (is_regex, prefix_len) = match &e.path {
        PathRule::Regex(_) => (true, 0),
        PathRule::Prefix(p) => (false, p.len()),
        PathRule::Any => (false, 0),
    };
    (kinds, plain_hosts, e.headers.len(), is_regex, prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, paths: &[&str], methods: &[&str], hosts: &[&str]) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            headers: Vec::new(),
            strip_path: true,
            service: None,
            plugin: None,
            plugin_path: None,
            key_auth: None,
            rate_limit: None,
            consumer_rate_limits: Vec::new(),
            prometheus: None,
        }
    }

    fn find(r: &Router, method: &str, host: Option<&str>, path: &str) -> Option<usize> {
        r.find(method, host, path, |_| None).map(|m| m.route)
    }

    #[test]
    fn longest_prefix_wins() {
        let r = Router::new(&[
            route("short", &["/openai"], &[], &[]),
            route("long", &["/openai/chat"], &[], &[]),
        ])
        .unwrap();
        assert_eq!(find(&r, "POST", None, "/openai/chat/completions"), Some(1));
        assert_eq!(find(&r, "POST", None, "/openai/embeddings"), Some(0));
        // Kong's prefixes are string-level, not segment-level.
        assert_eq!(find(&r, "POST", None, "/openaiX"), Some(0));
        assert_eq!(find(&r, "POST", None, "/other"), None);
    }

    #[test]
    fn regex_paths_are_anchored_and_capture() {
        let r = Router::new(&[
            route("prefix", &["/models"], &[], &[]),
            route("regex", &["~/models/(?<model>[^/]+)/chat$"], &[], &[]),
        ])
        .unwrap();
        let m = r
            .find("POST", None, "/models/gpt-4o/chat", |_| None)
            .unwrap();
        assert_eq!(m.route, 1);
        assert_eq!(
            m.captures,
            vec![("model".to_string(), "gpt-4o".to_string())]
        );
        assert_eq!(find(&r, "POST", None, "/x/models/gpt-4o/chat"), None);
        assert_eq!(find(&r, "POST", None, "/models/gpt-4o/chat/x"), Some(0));
    }

    #[test]
    fn methods_and_hosts_narrow_and_outrank() {
        let r = Router::new(&[
            route("any", &["/ai"], &[], &[]),
            route("post-only", &["/ai"], &["POST"], &[]),
            route("host", &["/ai"], &["POST"], &["api.example.com"]),
            route("wild", &["/ai"], &["POST"], &["*.example.org"]),
        ])
        .unwrap();
        assert_eq!(find(&r, "GET", None, "/ai"), Some(0));
        assert_eq!(find(&r, "POST", None, "/ai"), Some(1));
        assert_eq!(
            find(&r, "POST", Some("api.example.com:8000"), "/ai"),
            Some(2)
        );
        assert_eq!(find(&r, "POST", Some("x.example.org"), "/ai"), Some(3));
        assert_eq!(find(&r, "POST", Some("other.net"), "/ai"), Some(1));
    }

    #[test]
    fn headers_narrow_and_outrank() {
        let mut with_header = route("tenant", &["/ai"], &[], &[]);
        with_header.headers = vec![("x-tenant".into(), vec!["Blue".into(), "green".into()])];
        let r = Router::new(&[route("plain", &["/ai"], &[], &[]), with_header]).unwrap();
        let blue = |name: &str| (name == "x-tenant").then_some("blue");
        assert_eq!(r.find("POST", None, "/ai", blue).map(|m| m.route), Some(1));
        let red = |name: &str| (name == "x-tenant").then_some("red");
        assert_eq!(r.find("POST", None, "/ai", red).map(|m| m.route), Some(0));
        assert_eq!(find(&r, "POST", None, "/ai"), Some(0));
    }

    #[test]
    fn invalid_regex_is_an_error() {
        assert!(Router::new(&[route("bad", &["~/(unclosed"], &[], &[])]).is_err());
    }
}
