//! Video pipeline: `ffprobe` for duration, size, rotation and codecs; one `ffmpeg` run that
//! always re-encodes (H.264 yuv420p + AAC in MP4, ≤ 1080p, constant frame rate, rotation
//! applied, metadata dropped, `moov` first for streaming); and a poster frame.
//!
//! ffmpeg and ffprobe are the system binaries, driven through `ffmpeg-sidecar` with its
//! download feature off. Every run has a wall-clock limit; past it the process is killed.
//!
//! The input is a file a client uploaded, read by a large C program, so ffmpeg is told to
//! trust it with as little as possible: it may open local files only (no network
//! protocols), through the demuxers of the container formats we accept only (a playlist or
//! concat list naming other files, on the machine or elsewhere, is refused before it is
//! followed), frames beyond a size cap are refused before decoding, and the encoder's threads
//! are capped so one upload cannot take every core.

use ffmpeg_sidecar::command::FfmpegCommand;
use mosaic_api::content::MediaError;
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Input options of every ffmpeg and ffprobe run: local files only, through the demuxers
/// of the containers accepted (MP4/QuickTime, Matroska/WebM, AVI).
const INPUT_GUARD: [&str; 4] = ["-protocol_whitelist", "file", "-format_whitelist", "mov,matroska,webm,avi"];

/// Largest frame accepted: 8K UHD (DCI 8K is wider, and rarer than the bombs of its size).
pub const MAX_FRAME_PIXELS: u64 = 8192 * 4320;

/// Why a video could not be processed: the input's fault, or this machine's.
#[derive(Debug, PartialEq)]
pub enum VideoError {
    /// The input is refused; the media item records why.
    Media(MediaError),
    /// ffmpeg or ffprobe could not run here (missing, not executable): a server fault,
    /// retried, never blamed on the upload.
    Tool(String),
}

impl From<MediaError> for VideoError {
    fn from(e: MediaError) -> Self {
        VideoError::Media(e)
    }
}

/// What `ffprobe` tells about an input.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub duration_ms: u64,
    /// Display size (rotation applied).
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub video_codec: String,
    pub audio_codec: Option<String>,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

/// Probes `input`. A file ffprobe cannot read, or one without a video stream, is not a
/// video; a frame larger than [`MAX_FRAME_PIXELS`] is refused.
pub fn probe(input: &Path, limit: Duration) -> Result<Probe, VideoError> {
    probe_with(&ffmpeg_sidecar::ffprobe::ffprobe_path(), input, limit)
}

fn probe_with(ffprobe: &Path, input: &Path, limit: Duration) -> Result<Probe, VideoError> {
    let mut child = std::process::Command::new(ffprobe)
        .args(INPUT_GUARD)
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| VideoError::Tool(format!("cannot run {}: {e}", ffprobe.display())))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            let _ = std::io::Read::read_to_end(&mut s, &mut out);
        }
        out
    });
    let status = wait_with_limit(&mut child, limit).ok_or(MediaError::Timeout)?;
    let out = reader.join().unwrap_or_default();
    if !status {
        return Err(MediaError::NotAVideo.into());
    }
    let probe = parse_probe(&out)?;
    if u64::from(probe.width) * u64::from(probe.height) > MAX_FRAME_PIXELS {
        return Err(MediaError::TooManyPixels.into());
    }
    Ok(probe)
}

fn parse_probe(json: &[u8]) -> Result<Probe, MediaError> {
    let probe: ProbeJson = serde_json::from_slice(json).map_err(|_| MediaError::NotAVideo)?;
    let video = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && s.width.is_some())
        .ok_or(MediaError::NotAVideo)?;
    let audio = probe.streams.iter().find(|s| s.codec_type.as_deref() == Some("audio"));
    let (mut width, mut height) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if width == 0 || height == 0 {
        return Err(MediaError::NotAVideo);
    }
    if rotation(video).rem_euclid(180) == 90 {
        std::mem::swap(&mut width, &mut height);
    }
    let duration_s: f64 = probe.format.and_then(|f| f.duration).and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let fps = video
        .avg_frame_rate
        .as_deref()
        .and_then(ratio)
        .filter(|f| *f > 0.0)
        .or_else(|| video.r_frame_rate.as_deref().and_then(ratio))
        .unwrap_or(30.0);
    Ok(Probe {
        duration_ms: (duration_s * 1000.0).round().max(0.0) as u64,
        width,
        height,
        fps,
        video_codec: video.codec_name.clone().unwrap_or_default(),
        audio_codec: audio.and_then(|a| a.codec_name.clone()),
    })
}

fn rotation(stream: &StreamJson) -> i64 {
    let from_side_data = stream
        .side_data_list
        .iter()
        .find_map(|d| d.get("rotation").and_then(|r| r.as_f64().or_else(|| r.as_str()?.parse().ok())));
    let from_tags = stream.tags.get("rotate").and_then(|r| r.parse::<f64>().ok());
    from_side_data.or(from_tags).unwrap_or(0.0).round() as i64
}

fn ratio(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0).then_some(n / d)
}

/// Output size: the display size scaled to fit 1920 on the long side and 1080 on the short
/// side, never upscaled, even dimensions (yuv420p needs them).
pub fn target_size(width: u32, height: u32) -> (u32, u32) {
    let (long, short) = (width.max(height) as f64, width.min(height) as f64);
    let scale = (1920.0 / long).min(1080.0 / short).min(1.0);
    let even = |v: f64| ((v * scale / 2.0).round() as u32 * 2).max(2);
    (even(width as f64), even(height as f64))
}

/// The ffmpeg arguments that re-encode `input` to a streaming-ready MP4 at `output` with at
/// most `threads` encoder threads (public so the benchmark can run exactly this command
/// without Mosaic around it).
pub fn transcode_args(
    input: &Path,
    output: &Path,
    probe: &Probe,
    max_seconds: u64,
    threads: u32,
) -> Vec<std::ffi::OsString> {
    let (w, h) = target_size(probe.width, probe.height);
    let fps = probe.fps.clamp(1.0, 60.0);
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(std::ffi::OsString::from));
    push(&["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]);
    push(&INPUT_GUARD);
    push(&["-i"]);
    args.push(input.as_os_str().to_owned());
    let mut push = |items: &[&str]| args.extend(items.iter().map(std::ffi::OsString::from));
    push(&["-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn"]);
    // Autorotation (on by default) turns the display matrix into pixels before the
    // filters; nothing of the input's rotation or metadata reaches the output.
    push(&["-vf", &format!("scale={w}:{h}:flags=lanczos,format=yuv420p")]);
    push(&["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-profile:v", "high"]);
    push(&["-threads", &threads.max(1).to_string(), "-filter_threads", "1"]);
    push(&["-fps_mode", "cfr", "-r", &format!("{fps:.3}")]);
    push(&["-c:a", "aac", "-b:a", "128k", "-ac", "2"]);
    push(&["-map_metadata", "-1", "-map_chapters", "-1"]);
    push(&["-movflags", "+faststart"]);
    push(&["-t", &max_seconds.to_string()]);
    args.push(output.as_os_str().to_owned());
    args
}

/// Re-encodes `input` to a streaming-ready MP4 at `output`.
pub fn transcode(
    input: &Path,
    output: &Path,
    probe: &Probe,
    max_seconds: u64,
    threads: u32,
    limit: Duration,
) -> Result<(), VideoError> {
    let mut command = FfmpegCommand::new();
    command.args(transcode_args(input, output, probe, max_seconds, threads));
    run(command, limit)
}

/// Extracts one frame at `at_ms` as PNG.
pub fn poster(video: &Path, output: &Path, at_ms: u64, limit: Duration) -> Result<(), VideoError> {
    let mut command = FfmpegCommand::new();
    command
        .hide_banner()
        .args(["-nostdin", "-y", "-loglevel", "error"])
        .args(INPUT_GUARD)
        .args(["-ss", &format!("{:.3}", at_ms as f64 / 1000.0)])
        .input(video)
        .args(["-frames:v", "1", "-f", "image2", "-c:v", "png"])
        .output(output);
    run(command, limit)
}

fn run(mut command: FfmpegCommand, limit: Duration) -> Result<(), VideoError> {
    let mut child = command.spawn().map_err(|e| {
        tracing::error!(error = %e, "cannot start ffmpeg (is it installed?)");
        VideoError::Tool(format!("cannot run ffmpeg: {e}"))
    })?;
    // ffmpeg-sidecar pipes every stream; they are drained so ffmpeg never blocks on a full
    // pipe, and its error output is kept for the log.
    drop(child.take_stdin());
    let stdout = child.take_stdout();
    let stderr = child.take_stderr();
    let drain = std::thread::spawn(move || {
        if let Some(mut out) = stdout {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = stderr {
            let _ = std::io::Read::read_to_string(&mut std::io::Read::take(err, 16 * 1024), &mut text);
        }
        text
    });
    let outcome = wait_with_limit(child.as_inner_mut(), limit);
    let _ = drain.join();
    let errors = errors.join().unwrap_or_default();
    match outcome {
        Some(true) => Ok(()),
        Some(false) => {
            tracing::info!(ffmpeg = %errors.trim(), "ffmpeg refused the input");
            Err(MediaError::CorruptFile.into())
        }
        None => Err(MediaError::Timeout.into()),
    }
}

/// Waits for the child; kills it past `limit`. `Some(success)`, or `None` on timeout.
fn wait_with_limit(child: &mut std::process::Child, limit: Duration) -> Option<bool> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.success()),
            Ok(None) if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_fit_1080p_either_way_round_and_never_grow() {
        assert_eq!(target_size(3840, 2160), (1920, 1080));
        assert_eq!(target_size(2160, 3840), (1080, 1920));
        assert_eq!(target_size(640, 480), (640, 480));
        assert_eq!(target_size(1921, 1081), (1920, 1080));
        assert_eq!(target_size(321, 241), (322, 242));
    }

    #[test]
    fn probes_read_rotation_size_and_rate() {
        let json = br#"{"streams":[{"codec_type":"video","codec_name":"h264","width":1920,"height":1080,
            "avg_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}]},
            {"codec_type":"audio","codec_name":"aac"}],"format":{"duration":"2.500000"}}"#;
        let p = parse_probe(json).unwrap();
        assert_eq!((p.width, p.height), (1080, 1920));
        assert_eq!(p.duration_ms, 2500);
        assert!((p.fps - 29.97).abs() < 0.01);
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        let no_video = br#"{"streams":[{"codec_type":"audio","codec_name":"mp3"}],"format":{"duration":"3"}}"#;
        assert_eq!(parse_probe(no_video).unwrap_err(), MediaError::NotAVideo);
    }

    /// A small real video, made by ffmpeg itself.
    fn sample(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("sample.mp4");
        let made = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"])
            .args(["-t", "1", "-pix_fmt", "yuv420p"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success());
        path
    }

    #[test]
    fn playlists_and_concat_lists_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let video = sample(dir.path());
        assert!(probe(&video, Duration::from_secs(30)).is_ok(), "the video itself is fine");
        // Each names a file elsewhere on the machine; ffmpeg would read it if let.
        let hls = dir.path().join("list.m3u8");
        let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n", video.display());
        std::fs::write(&hls, playlist).unwrap();
        let concat = dir.path().join("list.ffconcat");
        std::fs::write(&concat, format!("ffconcat version 1.0\nfile '{}'\n", video.display())).unwrap();
        for list in [&hls, &concat] {
            assert_eq!(
                probe(list, Duration::from_secs(30)).unwrap_err(),
                VideoError::Media(MediaError::NotAVideo),
                "{}",
                list.display()
            );
            let out = dir.path().join("out.mp4");
            let as_probed = Probe {
                duration_ms: 1000,
                width: 64,
                height: 48,
                fps: 10.0,
                video_codec: "h264".into(),
                audio_codec: None,
            };
            let transcoded = transcode(list, &out, &as_probed, 60, 1, Duration::from_secs(60));
            assert_eq!(transcoded.unwrap_err(), VideoError::Media(MediaError::CorruptFile));
        }
    }

    #[test]
    fn a_missing_ffprobe_is_the_servers_fault_not_the_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let video = sample(dir.path());
        let missing = dir.path().join("no-such-ffprobe");
        assert!(matches!(probe_with(&missing, &video, Duration::from_secs(5)), Err(VideoError::Tool(_))));
    }

    #[test]
    fn frames_beyond_8k_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.mkv");
        let made = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=size=9000x4400:rate=1"])
            .args(["-t", "1", "-c:v", "ffv1"])
            .arg(&big)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success());
        assert_eq!(probe(&big, Duration::from_secs(30)).unwrap_err(), VideoError::Media(MediaError::TooManyPixels));
    }
}
