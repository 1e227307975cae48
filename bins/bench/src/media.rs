//! `mosaic-bench media`: the photo pipeline next to libvips' `vipsthumbnail`, and the video
//! path next to the same ffmpeg command run bare, in one run on the same inputs.

use anyhow::{Context as _, bail};
use clap::Args;
use image::{DynamicImage, RgbImage};
use mosaic_content::process::{image as photo, video};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct MediaLoad {
    /// Photos processed by each side.
    #[arg(long, default_value_t = 20)]
    photos: usize,
    /// Length of the test video in seconds.
    #[arg(long, default_value_t = 10)]
    video_seconds: u32,
    /// Rounds of the video comparison (the median is reported).
    #[arg(long, default_value_t = 3)]
    video_rounds: usize,
}

pub fn run(load: &MediaLoad) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    photos(dir.path(), load)?;
    videos(dir.path(), load)?;
    Ok(())
}

/// A 12-megapixel photo-like JPEG: gradients with fine noise, so the encoder and decoder
/// work as hard as on a camera picture.
fn twelve_megapixels() -> anyhow::Result<Vec<u8>> {
    let (w, h) = (4000u32, 3000u32);
    let mut seed: u32 = 0x1234_5678;
    let img = RgbImage::from_fn(w, h, |x, y| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (seed >> 27) as u8;
        image::Rgb([
            ((x * 255 / w) as u8).saturating_add(noise),
            ((y * 255 / h) as u8).saturating_add(noise / 2),
            (((x + y) * 127 / (w + h)) as u8).saturating_add(noise),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&DynamicImage::ImageRgb8(img))?;
    Ok(out)
}

fn photos(dir: &Path, load: &MediaLoad) -> anyhow::Result<()> {
    let jpeg = twelve_megapixels()?;
    let input = dir.join("photo.jpg");
    std::fs::write(&input, &jpeg)?;
    if Command::new("vipsthumbnail").arg("--vips-version").output().is_err() {
        bail!("vipsthumbnail not found (Debian package libvips-tools)");
    }
    let sizes: Vec<u32> = photo::PHOTO_SIZES.iter().map(|(_, s)| *s).collect();
    let vips = || -> anyhow::Result<()> {
        for size in &sizes {
            let out = dir.join(format!("vips-{size}.webp[Q=82,strip]"));
            let status = Command::new("vipsthumbnail")
                .arg(&input)
                .args(["--size", &size.to_string(), "-o"])
                .arg(&out)
                .status()?;
            if !status.success() {
                bail!("vipsthumbnail failed");
            }
        }
        Ok(())
    };
    let ours = || -> anyhow::Result<()> {
        photo::render(&jpeg, 50_000_000, 82.0, photo::PHOTO_SIZES).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    };
    // Warm both (page cache, lazy init), then alternate so drift hits both.
    vips()?;
    ours()?;
    let (mut t_vips, mut t_ours) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..load.photos {
        let t = Instant::now();
        vips()?;
        t_vips += t.elapsed();
        let t = Instant::now();
        ours()?;
        t_ours += t.elapsed();
    }
    let rate = |d: Duration| load.photos as f64 / d.as_secs_f64();
    println!(
        "photo: one 12 MP JPEG (4000x3000, {} KiB) to WebP q82 at 2048/1080/320 px, {} photos each, one at a time",
        jpeg.len() / 1024,
        load.photos
    );
    println!("| pipeline | photos/s | ms/photo |");
    println!("|---|---|---|");
    println!(
        "| mosaic (decode once, EXIF orientation, fast_image_resize Lanczos3 chained, libwebp, blurhash) | {:.2} | {:.0} |",
        rate(t_ours),
        t_ours.as_secs_f64() * 1000.0 / load.photos as f64
    );
    println!(
        "| vipsthumbnail x3 (shrink-on-load, one process per size) | {:.2} | {:.0} |",
        rate(t_vips),
        t_vips.as_secs_f64() * 1000.0 / load.photos as f64
    );
    println!("ratio mosaic/vips: {:.2}\n", rate(t_ours) / rate(t_vips));
    Ok(())
}

fn videos(dir: &Path, load: &MediaLoad) -> anyhow::Result<()> {
    let input = dir.join("video.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=duration={}:size=1920x1080:rate=30", load.video_seconds)])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={}", load.video_seconds)])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&input)
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg could not make the test video");
    }
    let limit = Duration::from_secs(3600);
    let threads = mosaic_content::Config::default().video_threads;
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..load.video_rounds {
        let out = dir.join(format!("ours-{round}.mp4"));
        let poster = dir.join(format!("poster-{round}.png"));
        let t = Instant::now();
        let probe = video::probe(&input, limit).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        video::transcode(&input, &out, &probe, 3600, threads, limit).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        video::poster(&out, &poster, 1000, limit).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ours.push(t.elapsed());

        let out = dir.join(format!("bare-{round}.mp4"));
        let t = Instant::now();
        let status =
            Command::new("ffmpeg").args(video::transcode_args(&input, &out, &probe, 3600, threads)).status()?;
        if !status.success() {
            bail!("bare ffmpeg failed");
        }
        bare.push(t.elapsed());
    }
    ours.sort();
    bare.sort();
    let (o, b) = (ours[ours.len() / 2], bare[bare.len() / 2]);
    let secs = f64::from(load.video_seconds);
    println!(
        "video: {}s 1920x1080 30 fps H.264 + AAC (testsrc2) to H.264/AAC MP4, median of {} rounds",
        load.video_seconds, load.video_rounds
    );
    println!("| path | wall time | realtime factor |");
    println!("|---|---|---|");
    println!(
        "| mosaic (ffprobe + transcode via ffmpeg-sidecar + poster) | {:.2} s | {:.2}x |",
        o.as_secs_f64(),
        secs / o.as_secs_f64()
    );
    println!("| the same ffmpeg transcode command, bare | {:.2} s | {:.2}x |", b.as_secs_f64(), secs / b.as_secs_f64());
    println!("overhead: {:+.1}%", (o.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0);
    Ok(())
}
