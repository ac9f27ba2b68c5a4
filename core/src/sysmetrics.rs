//! System metrics sampled in the background while a run is live: CPU, memory, disk and
//! network I/O (sysinfo), and NVIDIA GPUs through NVML with the `gpu` feature.
//!
//! | key | unit |
//! |---|---|
//! | `cpu.util` | % of all cores, whole machine |
//! | `cpu.process_util` | % of one core used by this process (can exceed 100) |
//! | `mem.used`, `mem.util` | bytes, % of the whole machine |
//! | `mem.rss` | bytes resident for this process |
//! | `disk.read_bytes`, `disk.write_bytes` | bytes read/written by this process since it started |
//! | `net.rx_bytes`, `net.tx_bytes` | bytes received/sent by all interfaces since the run started |
//! | `gpu.N.util`, `gpu.N.mem_util` | % |
//! | `gpu.N.mem_used` | bytes |
//! | `gpu.N.temp` | °C |
//! | `gpu.N.power` | W |

use sysinfo::{Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Takes samples of the machine and this process.
pub struct Sampler {
    sys: System,
    networks: Networks,
    pid: Pid,
    net_base: Option<(u64, u64)>,
    #[cfg(feature = "gpu")]
    nvml: Option<nvml_wrapper::Nvml>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("pid", &self.pid).finish()
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        let pid = Pid::from_u32(std::process::id());
        Sampler {
            sys,
            networks: Networks::new_with_refreshed_list(),
            pid,
            net_base: None,
            #[cfg(feature = "gpu")]
            nvml: nvml_wrapper::Nvml::init().ok(),
        }
    }

    /// One sample of every metric available here, as (key, value).
    pub fn sample(&mut self) -> Vec<(String, f64)> {
        let mut out = Vec::with_capacity(16);
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_disk_usage(),
        );
        out.push(("cpu.util".into(), f64::from(self.sys.global_cpu_usage())));
        let total = self.sys.total_memory();
        let used = self.sys.used_memory();
        out.push(("mem.used".into(), used as f64));
        if total > 0 {
            out.push(("mem.util".into(), used as f64 * 100.0 / total as f64));
        }
        if let Some(p) = self.sys.process(self.pid) {
            out.push(("cpu.process_util".into(), f64::from(p.cpu_usage())));
            out.push(("mem.rss".into(), p.memory() as f64));
            let d = p.disk_usage();
            out.push(("disk.read_bytes".into(), d.total_read_bytes as f64));
            out.push(("disk.write_bytes".into(), d.total_written_bytes as f64));
        }
        self.networks.refresh(true);
        let (rx, tx) = self
            .networks
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .fold((0u64, 0u64), |(r, t), (_, n)| {
                (r + n.total_received(), t + n.total_transmitted())
            });
        let (rx0, tx0) = *self.net_base.get_or_insert((rx, tx));
        out.push(("net.rx_bytes".into(), rx.saturating_sub(rx0) as f64));
        out.push(("net.tx_bytes".into(), tx.saturating_sub(tx0) as f64));
        #[cfg(feature = "gpu")]
        self.sample_gpus(&mut out);
        out
    }

    #[cfg(feature = "gpu")]
    fn sample_gpus(&mut self, out: &mut Vec<(String, f64)>) {
        use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
        let Some(nvml) = &self.nvml else { return };
        let Ok(count) = nvml.device_count() else {
            return;
        };
        for i in 0..count {
            let Ok(dev) = nvml.device_by_index(i) else {
                continue;
            };
            if let Ok(u) = dev.utilization_rates() {
                out.push((format!("gpu.{i}.util"), f64::from(u.gpu)));
            }
            if let Ok(m) = dev.memory_info() {
                out.push((format!("gpu.{i}.mem_used"), m.used as f64));
                if m.total > 0 {
                    out.push((
                        format!("gpu.{i}.mem_util"),
                        m.used as f64 * 100.0 / m.total as f64,
                    ));
                }
            }
            if let Ok(t) = dev.temperature(TemperatureSensor::Gpu) {
                out.push((format!("gpu.{i}.temp"), f64::from(t)));
            }
            if let Ok(p) = dev.power_usage() {
                out.push((format!("gpu.{i}.power"), f64::from(p) / 1000.0));
            }
        }
    }
}
