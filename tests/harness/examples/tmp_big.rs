use std::time::Instant;
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let az = ferry_harness::Azurite::start()?;
    let admin = az.admin();
    admin.create_container("big").await?;
    let path = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let r = admin.put_blob_from_file("big", "x.bin", &path).await?;
    println!("{:?} in {:?}", r.size, t.elapsed());
    Ok(())
}
