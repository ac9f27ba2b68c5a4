//! A small training loop that logs to runql: a sweep of logistic-regression runs on a
//! synthetic two-class data set, trained by real mini-batch SGD.
//!
//! ```sh
//! cargo run --example train            # logs into ~/.runql (or $RUNQL_STORE)
//! RUNQL_STORE=/tmp/demo cargo run --example train
//! ```
//!
//! Each trial is a child run of the sweep run, with its params, a learning curve per step,
//! validation accuracy per epoch, the data set as an input, and the trained weights as an
//! artifact. Afterwards the example compacts the project and reads the results back.

use std::time::Instant;

use runql_core::{Input, Store};

/// A deterministic pseudo-random generator (xorshift), so every run of the example is the same.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Two Gaussian blobs in 2-D: (x, y, label).
fn dataset(n: usize, rng: &mut Rng) -> Vec<([f64; 2], f64)> {
    (0..n)
        .map(|i| {
            let label = (i % 2) as f64;
            let center = if label > 0.5 {
                [1.0, 1.0]
            } else {
                [-1.0, -0.5]
            };
            ([center[0] + rng.normal(), center[1] + rng.normal()], label)
        })
        .collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn accuracy(w: &[f64; 3], data: &[([f64; 2], f64)]) -> f64 {
    let correct = data
        .iter()
        .filter(|(x, y)| (sigmoid(w[0] * x[0] + w[1] * x[1] + w[2]) > 0.5) == (*y > 0.5))
        .count();
    correct as f64 / data.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open_default()?;
    println!("store: {}", store.url());
    let project = store.project("logreg-demo");
    let mut rng = Rng(0x5eed);
    let train = dataset(4000, &mut rng);
    let val = dataset(1000, &mut rng);

    let t0 = Instant::now();
    let sweep = project.run().name("lr-sweep").group("demo").start()?;
    sweep.set_note("Learning-rate sweep of logistic regression on two Gaussian blobs.")?;
    let (epochs, batch) = (5, 32);
    for lr in [0.003, 0.03, 0.3] {
        let trial = sweep
            .child()
            .name(format!("lr={lr}"))
            .group("demo")
            .start()?;
        trial.log_params([
            ("lr", lr.to_string()),
            ("epochs", epochs.to_string()),
            ("batch", batch.to_string()),
            ("model", "logreg".into()),
        ])?;
        trial.log_input(
            Input::new("blobs-4000")
                .uri("synthetic://blobs?n=4000&seed=0x5eed")
                .role("train"),
        )?;
        trial.log_input(
            Input::new("blobs-1000")
                .uri("synthetic://blobs?n=1000")
                .role("eval"),
        )?;
        let loss_key = trial.metric_key("train/loss")?;
        let mut w = [0.0f64; 3];
        let mut step = 0i64;
        for epoch in 0..epochs {
            for chunk in train.chunks(batch) {
                let mut grad = [0.0; 3];
                let mut loss = 0.0;
                for (x, y) in chunk {
                    let p = sigmoid(w[0] * x[0] + w[1] * x[1] + w[2]);
                    loss -= y * p.max(1e-12).ln() + (1.0 - y) * (1.0 - p).max(1e-12).ln();
                    let e = p - y;
                    grad[0] += e * x[0];
                    grad[1] += e * x[1];
                    grad[2] += e;
                }
                let n = chunk.len() as f64;
                for (wi, gi) in w.iter_mut().zip(grad) {
                    *wi -= lr * gi / n;
                }
                // PyTorch-style: losses come out of float32 arithmetic.
                trial.log(loss_key, step, f64::from((loss / n) as f32))?;
                step += 1;
            }
            trial.log_metrics(
                step,
                [("val/acc", accuracy(&w, &val)), ("epoch", epoch as f64)],
            )?;
            trial.log_line(
                "stdout",
                format!("epoch {epoch}: val/acc {:.3}", accuracy(&w, &val)),
            )?;
        }
        trial.log_artifact_bytes(
            "model/weights.json",
            format!("{{\"w\": [{}, {}], \"b\": {}}}", w[0], w[1], w[2]),
        )?;
        println!(
            "  trial lr={lr:<6} val/acc {:.3}  ({} steps)",
            accuracy(&w, &val),
            step
        );
        trial.finish()?;
    }
    let sweep_id = sweep.id();
    sweep.finish()?;
    println!("logged 4 runs in {:.0?}", t0.elapsed());

    // Compaction turns the finished runs' segments into Parquet; then ask SQL which trial won.
    runql_core::block_on(async {
        let report = store.compact("logreg-demo").await?;
        println!(
            "compacted {} runs into {} Parquet files ({} bytes)",
            report.runs,
            report.files.len(),
            report.bytes
        );
        let engine = runql_query::Engine::new(store.clone()).await?;
        let sql = format!(
            "SELECT r.name, p.value AS lr, s.last_value AS val_acc, t.last_value AS train_loss
             FROM runs r
             JOIN params p ON p.run_id = r.run_id AND p.key = 'lr'
             JOIN metric_summary s ON s.run_id = r.run_id AND s.key = 'val/acc'
             JOIN metric_summary t ON t.run_id = r.run_id AND t.key = 'train/loss'
             WHERE r.parent_run_id = '{}'
             ORDER BY val_acc DESC, train_loss",
            sweep_id
        );
        println!("\n{sql};");
        let batches = engine.query(&sql).await?;
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
        let runs = engine
            .query("SELECT count(*) AS runs FROM runs WHERE project = 'logreg-demo'")
            .await?;
        println!("{}", arrow::util::pretty::pretty_format_batches(&runs)?);
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!("Ask your own questions: docs/sql.md lists every table, with examples.");
    Ok(())
}
