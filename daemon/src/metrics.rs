//! Registering a subsystem's metrics in the registry a daemon is given
//! (never the global one, so daemons in one process keep their own), under
//! the subsystem's prefix: `hstack_<subsystem>_<name>_<unit>`.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Makes metrics named `hstack_<subsystem>_…` in one registry. A name
/// registered twice in a registry is a bug (two daemons sharing one), and
/// panics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    prefix: String,
}

impl Metrics {
    pub fn new(registry: &Registry, subsystem: &str) -> Self {
        Self {
            registry: registry.clone(),
            prefix: format!("hstack_{subsystem}_"),
        }
    }

    /// Registers `c` and returns it.
    pub fn register<T: Collector + Clone + 'static>(&self, c: T) -> T {
        self.registry
            .register(Box::new(c.clone()))
            .expect("a metric registered once per registry");
        c
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(self.name(name), help).expect("a valid metric"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(self.name(name), help).expect("a valid metric"))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(
            IntCounterVec::new(Opts::new(self.name(name), help), labels).expect("a valid metric"),
        )
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(
            IntGaugeVec::new(Opts::new(self.name(name), help), labels).expect("a valid metric"),
        )
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(self.name(name), help).buckets(buckets))
                .expect("a valid metric"),
        )
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(self.name(name), help).buckets(buckets),
                labels,
            )
            .expect("a valid metric"),
        )
    }
}

/// Latency buckets in seconds, 100 µs to 1 s, for RPCs and fsyncs.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// `hstack_build_info{version,role}` (always 1).
pub fn register_build_info(registry: &Registry, role: &str) {
    let opts = Opts::new("hstack_build_info", "Build information of this daemon")
        .const_label("version", crate::VERSION)
        .const_label("role", role);
    let gauge = IntGauge::with_opts(opts).expect("a valid metric");
    gauge.set(1);
    // Constant: a second registration (two roles in one registry) is harmless.
    let _ = registry.register(Box::new(gauge));
}

/// The process's resident memory, CPU seconds, open file descriptors and
/// start time (`process_*`, Prometheus's standard names).
pub fn register_process_collector(registry: &Registry) {
    let pc = prometheus::process_collector::ProcessCollector::for_self();
    // One per process: in-process test clusters share it.
    let _ = registry.register(Box::new(pc));
}
