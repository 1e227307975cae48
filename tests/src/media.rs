//! Media fixtures, made in the test: nothing is checked in, every file's content is known.

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

/// Red.
pub const RED: [u8; 3] = [220, 20, 20];
/// Blue.
pub const BLUE: [u8; 3] = [20, 20, 220];

/// A JPEG stored `width × height` whose left half is red and right half blue, with an EXIF
/// block carrying `orientation` and, if asked, a GPS position (52°31'12.34" N).
pub fn jpeg_with_exif(width: u32, height: u32, orientation: u16, gps: bool) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, _| if x < width / 2 { Rgb(RED) } else { Rgb(BLUE) });
    let mut jpeg = Vec::new();
    DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).expect("encode jpeg");
    let exif = exif_segment(orientation, gps);
    let mut out = Vec::with_capacity(jpeg.len() + exif.len());
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The GPS latitude seconds written by [`jpeg_with_exif`] (1234/100), as their bytes.
pub const GPS_MARKER: [u8; 8] = [0, 0, 4, 210, 0, 0, 0, 100];

fn exif_segment(orientation: u16, gps: bool) -> Vec<u8> {
    let entries: u16 = if gps { 2 } else { 1 };
    let ifd0_len = 2 + 12 * entries as u32 + 4;
    let gps_ifd = 8 + ifd0_len;
    let gps_data = gps_ifd + 2 + 12 * 2 + 4;
    let mut t: Vec<u8> = b"MM\x00\x2a".to_vec();
    t.extend(8u32.to_be_bytes());
    t.extend(entries.to_be_bytes());
    t.extend(0x0112u16.to_be_bytes());
    t.extend(3u16.to_be_bytes());
    t.extend(1u32.to_be_bytes());
    t.extend(orientation.to_be_bytes());
    t.extend([0, 0]);
    if gps {
        t.extend(0x8825u16.to_be_bytes());
        t.extend(4u16.to_be_bytes());
        t.extend(1u32.to_be_bytes());
        t.extend(gps_ifd.to_be_bytes());
    }
    t.extend(0u32.to_be_bytes());
    if gps {
        t.extend(2u16.to_be_bytes());
        t.extend(0x0001u16.to_be_bytes());
        t.extend(2u16.to_be_bytes());
        t.extend(2u32.to_be_bytes());
        t.extend(*b"N\0\0\0");
        t.extend(0x0002u16.to_be_bytes());
        t.extend(5u16.to_be_bytes());
        t.extend(3u32.to_be_bytes());
        t.extend(gps_data.to_be_bytes());
        t.extend(0u32.to_be_bytes());
        for (n, d) in [(52u32, 1u32), (31, 1), (1234, 100)] {
            t.extend(n.to_be_bytes());
            t.extend(d.to_be_bytes());
        }
    }
    let mut seg = vec![0xFF, 0xE1];
    seg.extend(((2 + 6 + t.len()) as u16).to_be_bytes());
    seg.extend(b"Exif\0\0");
    seg.extend(t);
    seg
}

/// A PNG with a fully transparent left half and an opaque red right half.
pub fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let img =
        RgbaImage::from_fn(
            width,
            height,
            |x, _| if x < width / 2 { Rgba([0, 0, 0, 0]) } else { Rgba([220, 20, 20, 255]) },
        );
    let mut png = Vec::new();
    DynamicImage::ImageRgba8(img).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).expect("encode png");
    png
}

/// An animated GIF: a red frame, then a blue one.
pub fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        for color in [RED, BLUE] {
            let frame = RgbaImage::from_pixel(width, height, Rgba([color[0], color[1], color[2], 255]));
            encoder.encode_frame(image::Frame::new(frame)).expect("frame");
        }
    }
    out
}

/// A tiny PNG whose header claims `width × height` pixels: a decompression bomb.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend(data);
    out.extend(crc32(&crc_input).to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A real video made by ffmpeg's test source: `seconds` long, `width × height`, with a
/// sine tone; `rotate` writes a display rotation into the container.
pub fn video(dir: &Path, name: &str, seconds: u32, width: u32, height: u32, rotate: Option<i32>) -> Vec<u8> {
    let path = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc=duration={seconds}:size={width}x{height}:rate=25")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]);
    let status = cmd.arg(&path).status().expect("ffmpeg runs (is it installed?)");
    assert!(status.success(), "ffmpeg could not make the test video");
    if let Some(r) = rotate {
        // ffmpeg writes a display matrix for `rotate` only when remuxing, as phones do.
        let rotated = dir.join(format!("rotated-{name}"));
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(&path)
            .args(["-c", "copy", "-metadata:s:v:0", &format!("rotate={r}")])
            .arg(&rotated)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg could not rotate the test video");
        return std::fs::read(rotated).expect("read test video");
    }
    std::fs::read(path).expect("read test video")
}

/// Runs ffprobe on bytes and returns its JSON (streams and format).
pub fn ffprobe(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let path = dir.join(format!("probe-{}.bin", crate::client::unique()));
    std::fs::write(&path, bytes).expect("write probe input");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}
