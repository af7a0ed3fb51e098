//! Counts every HTTP request by route template, method and status, with its latency
//! (`gatehouse_http_requests_total`, `gatehouse_http_request_duration_seconds`).
//!
//! One outer tower layer, [`Count`], times the whole handling, the other layers' answers
//! included (a 408 of the request timeout, a 500 of a caught panic). It finds the request's
//! route template itself, in a [`Routes`] table of the application's templates (matchit, the
//! router axum uses, so both read a path alike): axum knows the matched route only inside the
//! router, and reading it there takes a route layer, which axum boxes and clones per request.
//! A path no template matches counts as `unmatched`: paths a client made up never become
//! label values.
//!
//! Measured with callgrind on `/healthz` (instructions per request, release build): the two
//! `from_fn` layers of the first version cost 14 % over no request metrics, a route layer with
//! a task-local slot 14 % too (the route layer's boxing and cloning, and string hashing);
//! this layer is the numbers in the README's Benchmarks section.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tower::{Layer, Service};

use crate::http::Refused;
use crate::metrics::{Metrics, RouteLabel};

/// The application's route templates, by the path they match.
pub struct Routes {
    matcher: matchit::Router<u16>,
    templates: Vec<String>,
}

/// The id of `unmatched`.
const UNMATCHED: u16 = u16::MAX;

impl Routes {
    /// The table of `templates`, in axum's syntax (`/v1/sessions/{session_id}`,
    /// `/docs/{*rest}`). One that conflicts with an earlier one is left out: list the routes
    /// as registered before any documentation-only spelling of them (the OpenAPI document
    /// writes a catch-all as `{path}`).
    pub fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut routes = Routes {
            matcher: matchit::Router::new(),
            templates: Vec::new(),
        };
        for template in templates {
            let Ok(id) = u16::try_from(routes.templates.len()) else {
                break;
            };
            if id != UNMATCHED && routes.matcher.insert(template, id).is_ok() {
                routes.templates.push(template.to_owned());
            }
        }
        routes
    }

    /// The route of `path`, or `unmatched`.
    pub fn label(&self, path: &str) -> RouteLabel<'_> {
        match self.matcher.at(path) {
            Ok(found) => RouteLabel {
                id: *found.value,
                template: &self.templates[usize::from(*found.value)],
            },
            Err(_) => RouteLabel {
                id: UNMATCHED,
                template: "unmatched",
            },
        }
    }
}

/// The outer layer: counts and times every request.
#[derive(Clone)]
pub struct CountLayer(Arc<Shared>);

/// What each request's future holds one reference to.
struct Shared {
    metrics: Arc<Metrics>,
    routes: Routes,
}

impl CountLayer {
    /// Counts into `metrics`, by the templates of `routes`.
    pub fn new(metrics: Arc<Metrics>, routes: Routes) -> Self {
        Self(Arc::new(Shared { metrics, routes }))
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`CountLayer`].
#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    layer: CountLayer,
}

impl<S> Service<Request> for Count<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = self.layer.0.routes.label(request.uri().path()).id;
        Counted {
            inner: self.inner.call(request),
            layer: self.layer.clone(),
            route,
            method,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Count`].
    pub struct Counted<F> {
        #[pin]
        inner: F,
        layer: CountLayer,
        route: u16,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let Shared { metrics, routes } = &*this.layer.0;
            match response.extensions().get::<Refused>() {
                Some(Refused::Credentials(reason)) => metrics.auth.failed(reason),
                Some(Refused::NotAdmin) => metrics.auth.forbidden(),
                None => {}
            }
            let template = routes
                .templates
                .get(usize::from(*this.route))
                .map_or("unmatched", String::as_str);
            metrics.http.answered(
                RouteLabel {
                    id: *this.route,
                    template,
                },
                this.method,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}

/// The method, or `other` for a method the API does not use (bounded label values).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_template_and_the_rest_is_unmatched() {
        let routes = Routes::new([
            "/v1/forward-auth/{*path}",
            "/v1/sessions/{session_id}",
            "/healthz",
            // A documentation-only spelling of the first: left out.
            "/v1/forward-auth/{path}",
        ]);
        assert_eq!(
            routes.label("/v1/sessions/s1").template,
            "/v1/sessions/{session_id}"
        );
        assert_eq!(
            routes.label("/v1/forward-auth/a/b").template,
            "/v1/forward-auth/{*path}"
        );
        assert_eq!(routes.label("/healthz").id, 2);
        for made_up in ["/healthz/", "/v1/sessions/s1/x", "/", "/HEALTHZ"] {
            assert_eq!(routes.label(made_up).template, "unmatched", "{made_up}");
        }
        assert_eq!(routes.templates.len(), 3);
    }
}
