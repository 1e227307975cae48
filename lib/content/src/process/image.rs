//! Photo pipeline: decode with limits, apply EXIF orientation, resize with SIMD, encode lossy
//! WebP, compute a blurhash. Only pixels are re-encoded, so no metadata (EXIF, GPS, XMP,
//! ICC comments) survives into a variant.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use mosaic_api::content::MediaError;
use std::io::Cursor;

/// One encoded rendition.
#[derive(Debug)]
pub struct Rendition {
    pub name: &'static str,
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// What the photo pipeline produces.
#[derive(Debug)]
pub struct Rendered {
    pub renditions: Vec<Rendition>,
    /// Display size after orientation.
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
}

/// Variant names and the longest edge each may have, largest first.
pub const PHOTO_SIZES: &[(&str, u32)] = &[("large", 2048), ("medium", 1080), ("thumb", 320)];
/// Variants of a video's poster frame, largest first.
pub const POSTER_SIZES: &[(&str, u32)] = &[("poster", 1080), ("thumb", 320)];

/// Decodes `bytes` and renders `sizes` (never upscaling) as lossy WebP.
pub fn render(
    bytes: &[u8],
    max_pixels: u64,
    quality: f32,
    sizes: &[(&'static str, u32)],
) -> Result<Rendered, MediaError> {
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_complete(bytes) {
        // The JPEG decoder is lenient and would return a half-grey picture.
        return Err(MediaError::CorruptFile);
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| MediaError::CorruptFile)?;
    if reader.format().is_none() {
        return Err(MediaError::UnsupportedFormat);
    }
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (w, h) = decoder.dimensions();
    // Checked from the header, before a single pixel is allocated.
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(MediaError::TooManyPixels);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(classify)?;
    let orientation = decoder.orientation().map_err(classify)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);

    let has_alpha = img.color().has_alpha();
    let (width, height) = (img.width(), img.height());
    let (pixel_type, raw) = if has_alpha {
        (PixelType::U8x4, img.into_rgba8().into_raw())
    } else {
        (PixelType::U8x3, img.into_rgb8().into_raw())
    };
    let mut source = Image::from_vec_u8(width, height, raw, pixel_type).map_err(|_| MediaError::CorruptFile)?;
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    let mut renditions = Vec::with_capacity(sizes.len());
    let mut blurhash = String::new();
    for (name, max_edge) in sizes {
        let (dw, dh) = fit(width, height, *max_edge);
        // Each size is resized from the previous (larger) one: much less work than going
        // from the full-size original every time, with no visible difference.
        let resized = if (dw, dh) == (source.width(), source.height()) {
            None
        } else {
            let mut dst = Image::new(dw, dh, pixel_type);
            resizer.resize(&source, &mut dst, &options).map_err(|_| MediaError::CorruptFile)?;
            Some(dst)
        };
        if let Some(dst) = resized {
            source = dst;
        }
        let pixels = source.buffer();
        let encoder =
            if has_alpha { webp::Encoder::from_rgba(pixels, dw, dh) } else { webp::Encoder::from_rgb(pixels, dw, dh) };
        let data = encoder.encode(quality).to_vec();
        if *name == "thumb" {
            blurhash = hash(pixels, dw, dh, has_alpha);
        }
        renditions.push(Rendition { name, data, width: dw, height: dh });
    }
    Ok(Rendered { renditions, width, height, blurhash })
}

/// Fits `w × h` into a square of `max_edge`, keeping the aspect ratio, never upscaling.
pub fn fit(w: u32, h: u32, max_edge: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= max_edge {
        return (w, h);
    }
    let scale = f64::from(max_edge) / f64::from(long);
    let dw = ((f64::from(w) * scale).round() as u32).max(1);
    let dh = ((f64::from(h) * scale).round() as u32).max(1);
    (dw, dh)
}

fn hash(pixels: &[u8], w: u32, h: u32, has_alpha: bool) -> String {
    let rgba: Vec<u8> = if has_alpha {
        pixels.to_vec()
    } else {
        pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
    };
    blurhash::encode(4, 3, w, h, &rgba).unwrap_or_default()
}

fn classify(e: image::ImageError) -> MediaError {
    match e {
        image::ImageError::Limits(_) => MediaError::TooManyPixels,
        image::ImageError::Unsupported(_) => MediaError::UnsupportedFormat,
        _ => MediaError::CorruptFile,
    }
}

/// Whether a JPEG's last scan is followed by its end-of-image marker. Entropy-coded data
/// never contains `FF D9` (a literal `FF` is stuffed as `FF 00`), so an `EOI` after the last
/// `SOS` means the picture data is all there; trailing data after it (maker notes, MPF
/// previews) is allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(last_sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_never_upscales_and_keeps_the_aspect_ratio() {
        assert_eq!(fit(4000, 3000, 2048), (2048, 1536));
        assert_eq!(fit(3000, 4000, 320), (240, 320));
        assert_eq!(fit(200, 100, 320), (200, 100));
        assert_eq!(fit(10000, 1, 320), (320, 1));
    }

    #[test]
    fn truncated_jpegs_are_detected() {
        let mut img = image::RgbImage::new(64, 48);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8 * 4, 10, 200]);
        }
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        assert!(jpeg_is_complete(&jpeg));
        assert!(!jpeg_is_complete(&jpeg[..jpeg.len() / 2]));
        assert_eq!(
            render(&jpeg[..jpeg.len() - 40], 50_000_000, 80.0, PHOTO_SIZES).unwrap_err(),
            MediaError::CorruptFile
        );
        let out = render(&jpeg, 50_000_000, 80.0, PHOTO_SIZES).unwrap();
        assert!(out.renditions.iter().all(|r| (r.width, r.height) == (64, 48)), "small images are not upscaled");
        assert!(!out.blurhash.is_empty());
    }
}
