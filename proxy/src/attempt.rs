//! The request policy both paths run, in one loop: pick an endpoint the breaker admits
//! (avoiding those already tried), send the request, and decide from the outcome whether
//! to answer, retry elsewhere, or give up; with the deadline over all attempts, the retry
//! budget, the breakers' bookkeeping and the metrics. What differs between the paths is
//! only how one attempt is sent, so that is all a path provides: a `Transport`. The loop is
//! generic over it, so each path gets its own monomorphized copy with nothing boxed.
//!
//! The order of the steps matters: the retry budget is filled before the first attempt so
//! a retry can never precede its own deposit; 5xx answers and failures after the request
//! was sent are retried only for idempotent methods, failed connects for any replayable
//! request (it never reached the service); the deadline runs until a final answer head
//! arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::time::Sleep;

use crate::balance::EndpointState;
use crate::error::ProxyError;
use crate::metrics::EndpointLabels;
use crate::upstream::Upstream;

/// Sends one attempt of a request to an endpoint and reads the answer's head.
pub(crate) trait Transport {
    /// What a final answer hands back to the path: a response, or a connection with the
    /// head read.
    type Answer;

    /// `at` is the clock reading the attempt started at; `fresh` asks for a new connection
    /// rather than an idle one, after `Outcome::Resend`.
    async fn send(
        &mut self,
        endpoint: &Arc<EndpointState>,
        at: Instant,
        fresh: bool,
    ) -> Outcome<Self::Answer>;
}

/// How one attempt ended.
pub(crate) enum Outcome<A> {
    /// A final answer, with its status.
    Answered(A, u16),
    /// No answer. `sent` when the request may have reached the endpoint and been acted on.
    Failed { sent: bool, reason: String },
    /// A reused idle connection turned out closed before answering: the request is sent
    /// again to the same endpoint over a fresh connection, outside the attempt count and
    /// the budget, and the endpoint is not blamed.
    Resend,
    /// The request cannot go on, through no fault of the endpoint: no retry.
    Stop(Stop),
}

/// Why a request got no answer from an endpoint.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The proxy answers with its own error.
    Error(ProxyError),
    /// The caller went away or sent a malformed body: there is no one left to answer.
    CallerGone,
}

/// A request's facts the loop decides by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// When the request arrived: its latency runs from here to the answer's head.
    pub started: Instant,
    /// The clock reading the first attempt starts at: the request path reads the clock as
    /// seldom as it can.
    pub first_attempt: Instant,
    /// The request can be sent again: it has no body, or its body is held whole.
    pub replayable: bool,
    /// Safe to send twice (RFC 9110 §9.2.2).
    pub idempotent: bool,
}

/// The answer that goes to the caller.
pub(crate) struct Delivered<A> {
    pub answer: A,
    pub endpoint: Arc<EndpointState>,
    /// When its head arrived.
    pub at: Instant,
}

impl Upstream {
    /// Runs the attempts of one request over `endpoints` (not empty) until an answer is to
    /// be passed on or the request given up; `deadline` is armed by the caller. `tried`
    /// is the caller's, so its capacity is reused from request to request.
    pub(crate) async fn attempts<T: Transport>(
        &self,
        plan: Plan,
        endpoints: &[Arc<EndpointState>],
        tried: &mut Vec<Arc<EndpointState>>,
        mut deadline: Pin<&mut Sleep>,
        transport: &mut T,
    ) -> Result<Delivered<T::Answer>, Stop> {
        self.budget.deposit();
        tried.clear();
        let mut attempt = 0;
        let mut resend = None;
        loop {
            let (endpoint, fresh) = match resend.take() {
                Some(endpoint) => (endpoint, true),
                None => {
                    attempt += 1;
                    let Some(endpoint) = self.balancer.pick(endpoints, tried).cloned() else {
                        return Err(Stop::Error(ProxyError::AllEjected {
                            service: self.service().to_owned(),
                        }));
                    };
                    tried.push(endpoint.clone());
                    (endpoint, false)
                }
            };
            let can_retry = plan.replayable && attempt < self.settings.max_attempts;
            let at = if tried.len() == 1 && !fresh {
                plan.first_attempt
            } else {
                Instant::now()
            };
            let in_flight = endpoint.start_at(at);
            let outcome = tokio::select! {
                biased;
                outcome = transport.send(&endpoint, at, fresh) => outcome,
                () = deadline.as_mut() => {
                    self.fail(&endpoint);
                    return Err(Stop::Error(ProxyError::Timeout {
                        service: self.service().to_owned(),
                        timeout_ms: self.settings.request_timeout.as_millis(),
                    }));
                }
            };
            match outcome {
                Outcome::Answered(answer, status) => {
                    let answered = Instant::now();
                    in_flight.finish_at(answered);
                    if self.answered(&endpoint, status, plan.idempotent, can_retry) {
                        // The answer is not wanted: dropping it drops its connection too.
                        continue;
                    }
                    endpoint.count_response(status);
                    self.latency
                        .observe(answered.duration_since(plan.started).as_secs_f64());
                    return Ok(Delivered {
                        answer,
                        endpoint,
                        at: answered,
                    });
                }
                Outcome::Failed { sent, reason } => {
                    drop(in_flight);
                    if self.failed(&endpoint, sent, plan.idempotent, can_retry) {
                        continue;
                    }
                    return Err(Stop::Error(ProxyError::Unreachable {
                        service: self.service().to_owned(),
                        endpoint: endpoint.authority.clone(),
                        reason,
                    }));
                }
                Outcome::Resend => {
                    drop(in_flight);
                    resend = Some(endpoint);
                }
                Outcome::Stop(stop) => return Err(stop),
            }
        }
    }

    fn fail(&self, endpoint: &EndpointState) {
        if endpoint.breaker.failure() {
            tracing::info!(service = %self.service(), endpoint = %endpoint.id, "endpoint ejected");
            self.metrics
                .ejections
                .get_or_create(&EndpointLabels {
                    service: self.service().into(),
                    endpoint: endpoint.id.as_str().into(),
                })
                .inc();
        }
    }

    /// An endpoint answered `status`: its breaker learns of it. True when the request is to
    /// be retried on another endpoint: a 502/503/504 to an idempotent request, with
    /// attempts and budget left.
    fn answered(
        &self,
        endpoint: &EndpointState,
        status: u16,
        idempotent: bool,
        can_retry: bool,
    ) -> bool {
        if status >= 500 {
            self.fail(endpoint);
        } else {
            endpoint.breaker.success();
        }
        let retry = matches!(status, 502..=504) && idempotent && can_retry;
        retry && self.take_retry()
    }

    /// An attempt failed without an answer: the breaker learns of it. True when the request
    /// is to be retried: one that may have reached the endpoint (`sent`) could have been
    /// acted on, so only an idempotent one is.
    fn failed(
        &self,
        endpoint: &EndpointState,
        sent: bool,
        idempotent: bool,
        can_retry: bool,
    ) -> bool {
        self.fail(endpoint);
        (!sent || idempotent) && can_retry && self.take_retry()
    }

    fn take_retry(&self) -> bool {
        let granted = self.budget.withdraw();
        if granted {
            self.retries.inc();
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use ferry_core::Registry;

    use super::*;
    use crate::balance::Strategy;
    use crate::metrics::ProxyMetrics;
    use crate::upstream::UpstreamSettings;

    /// A transport that answers from a script, and pends forever once it runs out.
    #[derive(Default)]
    struct Script {
        outcomes: VecDeque<Outcome<()>>,
        /// Each send: the endpoint and whether a fresh connection was asked for.
        sends: Vec<(String, bool)>,
    }

    impl Transport for Script {
        type Answer = ();

        async fn send(
            &mut self,
            endpoint: &Arc<EndpointState>,
            _: Instant,
            fresh: bool,
        ) -> Outcome<()> {
            self.sends.push((endpoint.id.clone(), fresh));
            match self.outcomes.pop_front() {
                Some(outcome) => outcome,
                None => std::future::pending().await,
            }
        }
    }

    fn upstream(max_attempts: u32) -> Upstream {
        let settings = UpstreamSettings {
            max_attempts,
            request_timeout: Duration::from_secs(1),
            strategy: Strategy::RoundRobin,
            ..UpstreamSettings::default()
        };
        let registry = Arc::new(Registry::default());
        Upstream::new("SERVICE", registry, settings, Arc::new(ProxyMetrics::new()))
    }

    fn endpoints() -> Vec<Arc<EndpointState>> {
        ["a", "b", "c"]
            .map(|id| Arc::new(EndpointState::new(id.into(), format!("{id}:80"))))
            .into()
    }

    async fn run(
        upstream: &Upstream,
        idempotent: bool,
        outcomes: Vec<Outcome<()>>,
    ) -> (Result<String, Stop>, Vec<(String, bool)>) {
        let now = Instant::now();
        let plan = Plan {
            started: now,
            first_attempt: now,
            replayable: true,
            idempotent,
        };
        let mut script = Script {
            outcomes: outcomes.into(),
            ..Script::default()
        };
        let deadline = tokio::time::sleep(upstream.settings.request_timeout);
        tokio::pin!(deadline);
        let endpoints = endpoints();
        let mut tried = Vec::new();
        let result = upstream
            .attempts(plan, &endpoints, &mut tried, deadline, &mut script)
            .await
            .map(|delivered| delivered.endpoint.id.clone());
        (result, script.sends)
    }

    fn failed(sent: bool) -> Outcome<()> {
        Outcome::Failed {
            sent,
            reason: "refused".into(),
        }
    }

    #[tokio::test]
    async fn a_gateway_error_to_an_idempotent_request_is_retried_on_another_endpoint() {
        let upstream = upstream(3);
        let (result, sends) = run(
            &upstream,
            true,
            vec![Outcome::Answered((), 503), Outcome::Answered((), 200)],
        )
        .await;
        assert_eq!(sends.len(), 2);
        assert_ne!(
            sends[0].0, sends[1].0,
            "the retry avoids the endpoint tried"
        );
        assert_eq!(result.unwrap(), sends[1].0);
        assert_eq!(upstream.retries.get(), 1);

        let (result, sends) = run(&upstream, false, vec![Outcome::Answered((), 503)]).await;
        assert_eq!(sends.len(), 1);
        assert_eq!(result.unwrap(), sends[0].0, "a POST's 503 is the answer");
        assert_eq!(upstream.retries.get(), 1);
    }

    #[tokio::test]
    async fn only_a_request_that_never_reached_the_endpoint_is_retried_unless_idempotent() {
        let upstream = upstream(3);
        let (result, sends) = run(
            &upstream,
            false,
            vec![failed(false), Outcome::Answered((), 200)],
        )
        .await;
        assert!(result.is_ok(), "a failed connect is retried");
        assert_eq!(sends.len(), 2);

        let (result, sends) = run(&upstream, false, vec![failed(true)]).await;
        assert!(matches!(
            result,
            Err(Stop::Error(ProxyError::Unreachable { .. }))
        ));
        assert_eq!(
            sends.len(),
            1,
            "a POST that may have been acted on is not resent"
        );

        let (result, sends) = run(
            &upstream,
            true,
            vec![failed(true), failed(true), failed(true)],
        )
        .await;
        assert!(matches!(
            result,
            Err(Stop::Error(ProxyError::Unreachable { .. }))
        ));
        assert_eq!(sends.len(), 3, "attempts run out at max_attempts");
    }

    #[tokio::test]
    async fn a_resend_goes_to_the_same_endpoint_on_a_fresh_connection_outside_the_attempts() {
        let upstream = upstream(1);
        let (result, sends) = run(
            &upstream,
            true,
            vec![Outcome::Resend, Outcome::Answered((), 200)],
        )
        .await;
        assert_eq!(sends.len(), 2);
        assert_eq!(sends[0].0, sends[1].0);
        assert_eq!((sends[0].1, sends[1].1), (false, true));
        assert_eq!(result.unwrap(), sends[0].0);
        assert_eq!(
            upstream.retries.get(),
            0,
            "a resend takes nothing from the budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_covers_all_attempts() {
        let upstream = upstream(3);
        let (result, sends) = run(&upstream, true, vec![Outcome::Answered((), 502)]).await;
        assert!(matches!(
            result,
            Err(Stop::Error(ProxyError::Timeout { .. }))
        ));
        assert_eq!(sends.len(), 2, "the retry ran into the same deadline");

        let (result, _) = run(&upstream, true, vec![Outcome::Stop(Stop::CallerGone)]).await;
        assert!(matches!(result, Err(Stop::CallerGone)));
    }
}
