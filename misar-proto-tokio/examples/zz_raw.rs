use std::time::Instant;
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open("redis://127.0.0.1:6399/?protocol=resp3").unwrap();
        let con = client.get_multiplexed_async_connection().await.unwrap();
        for c in [1usize, 32, 256] {
            let n = 100_000usize;
            let start = Instant::now();
            let tasks: Vec<_> = (0..c)
                .map(|_| {
                    let mut con = con.clone();
                    tokio::spawn(async move {
                        for _ in 0..n / c {
                            let _: i64 = redis::cmd("PUBLISH")
                                .arg("x")
                                .arg("hello")
                                .query_async(&mut con)
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            println!(
                "PUBLISH c={c}: {:.0}/s",
                n as f64 / start.elapsed().as_secs_f64()
            );
        }
    });
}
