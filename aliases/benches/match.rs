//! `match_command` at 100, 1,000 and 10,000 aliases.
//!
//! Criterion reports the mean per command; the target is on p99, which
//! criterion does not give, so afterwards each case is also timed call by
//! call (100,000 calls, `Instant`) and p50/p99/p99.9 are printed from the
//! sorted samples. Run with `cargo bench -p squall-aliases`.
//!
//! The shapes differ mostly in their leading word, so formats share compiled
//! regexes (as similar aliases do in practice); `10000-distinct` makes every
//! format unique to show the worst case.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use squall_aliases::{AliasDef, AliasIndex, FormatDef, ParamType};

const SIZES: [usize; 3] = [100, 1_000, 10_000];
const SAMPLES: usize = 100_000;

/// A mix of realistic shapes, plus a fixed handful of formats that cannot be
/// bucketed by leading word (start with a parameter, or `match_multiple`).
/// With `distinct`, every format also gets a unique word after its first
/// parameter, so no two formats can share a compiled regex: the worst case.
fn aliases(n: usize, distinct: bool) -> Vec<AliasDef> {
    let mut defs: Vec<AliasDef> = (0..n)
        .map(|i| {
            let id = format!("pack{}.alias{i}", i % 37);
            let (formats, types): (Vec<FormatDef>, &[(&str, ParamType)]) = match i % 5 {
                0 => (
                    vec![format!("deploy{i} {{{{app}}}} to {{{{env=staging}}}}").into()],
                    &[],
                ),
                1 => (
                    vec![format!("restart{i} service {{{{name}}}} on {{{{host}}}}").into()],
                    &[],
                ),
                2 => (
                    vec![FormatDef::with_display(
                        format!("scale{i} <app> to <count>"),
                        [
                            format!("scale{i} {{{{app}}}} to {{{{count}}}}"),
                            format!("scale{i} {{{{app}}}} {{{{count}}}}"),
                        ],
                    )],
                    &[("count", ParamType::Integer)],
                ),
                3 => (
                    vec![
                        format!("status{i} of {{{{service=all}}}}").into(),
                        format!("status{i}").into(),
                    ],
                    &[],
                ),
                _ => (
                    vec![format!(r"ticket{i} (?P<key>[A-Z]+-\d+) {{{{action=view}}}}").into()],
                    &[],
                ),
            };
            let formats = if distinct {
                formats
                    .into_iter()
                    .map(|f| FormatDef {
                        display: f.display,
                        representations: f
                            .representations
                            .into_iter()
                            .map(|r| r.replacen("}} ", &format!("}}}} v{i} "), 1))
                            .collect(),
                    })
                    .collect()
            } else {
                formats
            };
            AliasDef {
                id,
                description: format!("alias number {i}"),
                formats,
                param_types: types.iter().map(|(k, t)| (k.to_string(), *t)).collect(),
                ..Default::default()
            }
        })
        .collect();
    for (j, f) in [
        "{{choice}} cross the {{target}}",
        "{{who}} broke {{what}} again",
        "{{thing}} is on fire",
    ]
    .into_iter()
    .enumerate()
    {
        defs.push(AliasDef {
            id: format!("misc.wild{j}"),
            formats: vec![f.into()],
            ..Default::default()
        });
    }
    for word in ["fixes", "duplicate of"] {
        defs.push(AliasDef {
            id: format!("jira.{}", word.replace(' ', "_")),
            formats: vec![FormatDef::plain(format!(
                r"(?:\b|^){word} (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\b|$)"
            ))],
            match_multiple: true,
            ..Default::default()
        });
    }
    defs
}

fn matching_command(i: usize, distinct: bool) -> String {
    let v = if distinct {
        format!(" v{i}")
    } else {
        String::new()
    };
    match i % 5 {
        0 => format!("deploy{i} web{v} to prod"),
        1 => format!("restart{i} service nginx{v} on web-1"),
        2 => format!("scale{i} api{v} to 3"),
        3 => format!("status{i} of database"),
        _ => format!("ticket{i} OPS-1234{v} close"),
    }
}

struct Fixture {
    label: String,
    index: AliasIndex,
    matching: Vec<String>,
    unknown: Vec<String>,
    typo: Vec<String>,
}

fn fixture(size: usize, distinct: bool) -> Fixture {
    let label = if distinct {
        format!("{size}-distinct")
    } else {
        size.to_string()
    };
    let start = Instant::now();
    let index = AliasIndex::build(aliases(size, distinct)).expect("bench aliases compile");
    eprintln!(
        "built {label} aliases ({} formats) in {:.2?}",
        index.format_count(),
        start.elapsed()
    );
    // Spread commands over the whole index (a cheap LCG, fixed seed) so the
    // measurement is not one hot bucket.
    let mut x: u64 = 0x9e37_79b9;
    let picks: Vec<usize> = (0..1024)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % size
        })
        .collect();
    let matching: Vec<String> = picks
        .iter()
        .map(|&i| matching_command(i, distinct))
        .collect();
    for c in &matching {
        index.match_command(c).expect("bench command matches");
    }
    Fixture {
        label,
        matching,
        unknown: picks
            .iter()
            .map(|i| format!("frobnicate the widget number {i} please"))
            .collect(),
        // One edit away from a real leading word: exercises the suggestion path.
        typo: picks
            .iter()
            .map(|&i| format!("dpeloy{} web to prod", i - i % 5))
            .collect(),
        index,
    }
}

fn cases(f: &Fixture) -> [(&'static str, &[String]); 3] {
    [
        ("matching", &f.matching),
        ("non-matching", &f.unknown),
        ("typo (suggestion)", &f.typo),
    ]
}

fn criterion_benches(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = c.benchmark_group("match_command");
    for f in fixtures {
        for (name, commands) in cases(f) {
            group.bench_with_input(BenchmarkId::new(name, &f.label), commands, |b, commands| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) % commands.len();
                    black_box(f.index.match_command(black_box(&commands[k]))).is_ok()
                })
            });
        }
    }
    group.finish();
}

fn percentiles(fixtures: &[Fixture]) {
    println!("\nper-call latency over {SAMPLES} calls (Instant, sorted samples):");
    println!(
        "{:>14}  {:<18} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "aliases", "case", "mean", "p50", "p99", "p99.9", "max"
    );
    let mut samples = Vec::with_capacity(SAMPLES);
    for f in fixtures {
        for (name, commands) in cases(f) {
            samples.clear();
            for k in 0..SAMPLES {
                let command = &commands[k % commands.len()];
                let t = Instant::now();
                let _ = black_box(f.index.match_command(black_box(command)));
                samples.push(t.elapsed());
            }
            samples.sort_unstable();
            let mean = samples.iter().sum::<Duration>() / SAMPLES as u32;
            let at = |q: f64| samples[((SAMPLES as f64 * q) as usize).min(SAMPLES - 1)];
            println!(
                "{:>14}  {:<18} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?}",
                f.label,
                name,
                mean,
                at(0.50),
                at(0.99),
                at(0.999),
                samples[SAMPLES - 1]
            );
        }
    }
}

fn main() {
    let mut fixtures: Vec<Fixture> = SIZES.into_iter().map(|n| fixture(n, false)).collect();
    fixtures.push(fixture(10_000, true));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut c, &fixtures);
    c.final_summary();
    // `cargo test --benches` / `--list` run in a quick mode; skip the long part.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        percentiles(&fixtures);
    }
}
