//! The gRPC recipes (`examples/proxies/envoy-grpc.yaml`, `examples/proxies/istio/`), parsed
//! as YAML and checked for what the README promises of them: neither Envoy nor Istio runs on
//! this machine, so this is structure, not behaviour (the behaviour is gatehouse's side,
//! driven in `forward_auth_grpc.rs` with CheckRequests shaped like Envoy's).

use yaml_rust2::{Yaml, YamlLoader};

fn recipe(path: &str) -> Vec<Yaml> {
    let file = format!("{}/examples/proxies/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"))
}

fn str_at<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

fn list<'a>(value: &'a Yaml, what: &str) -> &'a [Yaml] {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {value:?}"))
}

#[test]
fn the_envoy_grpc_recipe_fails_closed_and_strips_before_asking() {
    let docs = recipe("envoy-grpc.yaml");
    let config = &docs[0]["static_resources"];
    let listener = &config["listeners"][0];
    let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(manager["use_remote_address"].as_bool(), Some(true));
    assert_eq!(
        str_at(
            &manager["common_http_protocol_options"]["headers_with_underscores_action"],
            "underscores"
        ),
        "REJECT_REQUEST",
        "x_gatehouse_user would dodge the header_mutation filter"
    );
    let filters = list(&manager["http_filters"], "http_filters");
    let names: Vec<&str> = filters.iter().map(|f| str_at(&f["name"], "name")).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.router"
        ],
        "client-sent X-Gatehouse-* removed before the check, the router last"
    );
    let removed: Vec<&str> = list(
        &filters[0]["typed_config"]["mutations"]["request_mutations"],
        "request_mutations",
    )
    .iter()
    .map(|m| str_at(&m["remove"], "remove"))
    .collect();
    assert_eq!(removed, crate::forward_auth::GATEHOUSE_HEADERS);

    let authz = &filters[1]["typed_config"];
    assert_eq!(
        str_at(&authz["@type"], "@type"),
        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
    );
    assert_eq!(str_at(&authz["transport_api_version"], "version"), "V3");
    assert_eq!(authz["failure_mode_allow"].as_bool(), Some(false));
    assert_eq!(
        str_at(&authz["status_on_error"]["code"], "status_on_error"),
        "ServiceUnavailable",
        "an outage must not look like a denial"
    );
    assert!(
        authz["http_service"].is_badvalue(),
        "gRPC, not the HTTP service"
    );
    assert!(
        authz["allowed_headers"].is_badvalue(),
        "every header must reach gatehouse, or it cannot list client-sent x-gatehouse-* to remove"
    );
    let grpc = &authz["grpc_service"];
    assert_eq!(
        str_at(&grpc["timeout"], "timeout"),
        "1s",
        "an explicit timeout"
    );
    let cluster_name = str_at(&grpc["envoy_grpc"]["cluster_name"], "cluster_name");

    let clusters = list(&config["clusters"], "clusters");
    let cluster = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some(cluster_name))
        .unwrap_or_else(|| panic!("no cluster {cluster_name}"));
    let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(
        !options["explicit_http_config"]["http2_protocol_options"].is_badvalue(),
        "gRPC needs HTTP/2 to gatehouse: {cluster:?}"
    );
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["port_value"].as_i64(), Some(9191));

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/proxies/envoy-grpc.yaml"
    ))
    .expect("the recipe");
    assert!(text.contains("GATEHOUSE_GRPC_LISTEN=127.0.0.1:9191"));
    assert!(text.contains("not run"), "the recipe says it was not run");
}

#[test]
fn the_istio_recipes_name_a_provider_that_fails_closed_on_every_request() {
    let mesh = recipe("istio/mesh-config.yaml");
    let providers = list(
        &mesh[0]["spec"]["meshConfig"]["extensionProviders"],
        "extensionProviders",
    );
    let provider = |name: &str| {
        providers
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no provider {name}"))
    };
    let grpc = &provider("gatehouse-grpc")["envoyExtAuthzGrpc"];
    let http = &provider("gatehouse-http")["envoyExtAuthzHttp"];
    for (kind, p, port) in [("grpc", grpc, 9191), ("http", http, 8080)] {
        assert_eq!(p["port"].as_i64(), Some(port), "{kind}");
        assert_eq!(p["failOpen"].as_bool(), Some(false), "{kind}");
        assert_eq!(
            str_at(&p["statusOnError"], "statusOnError"),
            "503",
            "{kind}"
        );
        assert_eq!(
            str_at(&p["timeout"], "timeout"),
            "1s",
            "{kind}: Istio's default is 600s"
        );
        assert_eq!(
            str_at(&p["service"], "service"),
            "gatehouse.gatehouse.svc.cluster.local"
        );
    }
    assert_eq!(
        str_at(&http["pathPrefix"], "pathPrefix"),
        "/v1/forward-auth",
        "the envoy style"
    );
    let sent: Vec<&str> = list(&http["includeRequestHeadersInCheck"], "included")
        .iter()
        .map(|h| str_at(h, "header"))
        .collect();
    for header in [
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(sent.contains(&header), "{header} is not sent to gatehouse");
    }
    let upstream: Vec<&str> = list(&http["headersToUpstreamOnAllow"], "upstream")
        .iter()
        .map(|h| str_at(h, "header"))
        .collect();
    assert_eq!(upstream, ["x-gatehouse-*"]);

    for kind in ["grpc", "http"] {
        let policy = recipe(&format!("istio/authorization-policy-{kind}.yaml"));
        let policy = &policy[0];
        assert_eq!(
            str_at(&policy["kind"], "kind"),
            "AuthorizationPolicy",
            "{kind}"
        );
        assert_eq!(str_at(&policy["spec"]["action"], "action"), "CUSTOM");
        let name = str_at(&policy["spec"]["provider"]["name"], "provider");
        assert_eq!(name, format!("gatehouse-{kind}"));
        provider(name);
        let rules = list(&policy["spec"]["rules"], "rules");
        assert_eq!(rules.len(), 1, "{kind}");
        assert!(
            rules[0].as_hash().is_some_and(|h| h.is_empty()),
            "{kind}: one empty rule, which matches every request: {rules:?}"
        );
    }

    let service = recipe("istio/gatehouse-service.yaml");
    let ports = list(&service[0]["spec"]["ports"], "ports");
    let protocol = |port: i64| {
        ports
            .iter()
            .find(|p| p["port"].as_i64() == Some(port))
            .and_then(|p| p["appProtocol"].as_str())
    };
    assert_eq!(
        protocol(9191),
        Some("grpc"),
        "Istio must speak HTTP/2 to it"
    );
    assert_eq!(protocol(8080), Some("http"));
}
