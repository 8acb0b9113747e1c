package mediaapi

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"sort"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP with image.Decode
)

// Method is how a thumbnail fits its box.
type Method string

const (
	// Scale keeps the aspect ratio and fits the image within the box.
	Scale Method = "scale"
	// Crop fills the box and cuts off what sticks out, centred.
	Crop Method = "crop"
)

// ThumbSize is a thumbnail's box and method.
type ThumbSize struct {
	Width, Height int
	Method        Method
}

// StandardSizes are the thumbnails the spec recommends; they are made
// together on the first request for any of them, and kept.
var StandardSizes = []ThumbSize{
	{32, 32, Crop},
	{96, 96, Crop},
	{320, 240, Scale},
	{640, 480, Scale},
	{800, 600, Scale},
}

// pickSize returns the size to make for a request: the smallest standard
// size of the method that is at least as large as asked, else the size
// asked for (standard is then false).
func pickSize(w, h int, m Method) (ThumbSize, bool) {
	for _, s := range StandardSizes {
		if s.Method == m && s.Width >= w && s.Height >= h {
			return s, true
		}
	}
	return ThumbSize{w, h, m}, false
}

// Thumbnail errors, mapped to Matrix errors by the service.
var (
	errNotImage    = errors.New("content is not an image that can be thumbnailed")
	errTooManyPx   = errors.New("image has too many pixels to thumbnail")
	errAnimatedWeb = errors.New("animated WebP cannot be thumbnailed")
)

// srcInfo is what is known about an image before decoding it.
type srcInfo struct {
	Format   string // jpeg, png, gif, webp
	Width    int
	Height   int
	Frames   int // GIF frames (1 for everything else)
	Animated bool
	// Orientation is the EXIF orientation of a JPEG (1: stored upright).
	// Width and Height are those of the upright image.
	Orientation int
}

// storedSize is the size of the image as stored (before orientation).
func (i srcInfo) storedSize() (int, int) {
	if swapsAxes(i.Orientation) {
		return i.Height, i.Width
	}
	return i.Width, i.Height
}

// probe reads an image's format, dimensions and frame count without
// decoding its pixels, and refuses images above maxPixels (decompression
// bombs) before anything large is allocated.
func probe(src []byte, maxPixels int64) (srcInfo, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil {
		return srcInfo{}, errNotImage
	}
	switch format {
	case "jpeg", "png", "gif", "webp":
	default:
		return srcInfo{}, errNotImage
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return srcInfo{}, errNotImage
	}
	info := srcInfo{Format: format, Width: cfg.Width, Height: cfg.Height, Frames: 1, Orientation: 1}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return info, errTooManyPx
	}
	switch format {
	case "gif":
		n, err := gifFrames(src)
		if err != nil {
			return info, errNotImage
		}
		info.Frames = n
		info.Animated = n > 1
	case "webp":
		info.Animated = webpAnimated(src)
	case "jpeg":
		info.Orientation = jpegOrientation(src)
		if swapsAxes(info.Orientation) {
			info.Width, info.Height = info.Height, info.Width
		}
	}
	return info, nil
}

// precheck reads only an image's header: errNotImage or errTooManyPx when
// it is no image to thumbnail.
func precheck(r io.Reader, maxPixels int64) error {
	cfg, format, err := image.DecodeConfig(r)
	switch {
	case err != nil:
		return errNotImage
	case format != "jpeg" && format != "png" && format != "gif" && format != "webp":
		return errNotImage
	case int64(cfg.Width)*int64(cfg.Height) > maxPixels:
		return errTooManyPx
	}
	return nil
}

// gifFrames counts the frames of a GIF by walking its blocks, without
// decompressing any of them.
func gifFrames(b []byte) (int, error) {
	bad := errors.New("malformed GIF")
	if len(b) < 13 {
		return 0, bad
	}
	i := 13
	if flags := b[10]; flags&0x80 != 0 {
		i += 3 << ((flags & 7) + 1)
	}
	skipSubBlocks := func() error {
		for {
			if i >= len(b) {
				return bad
			}
			n := int(b[i])
			i++
			if n == 0 {
				return nil
			}
			i += n
		}
	}
	frames := 0
	for i < len(b) {
		switch b[i] {
		case 0x21: // extension: label, then sub-blocks
			i += 2
			if err := skipSubBlocks(); err != nil {
				return frames, bad
			}
		case 0x2c: // image descriptor
			if i+10 > len(b) {
				return frames, bad
			}
			flags := b[i+9]
			i += 10
			if flags&0x80 != 0 {
				i += 3 << ((flags & 7) + 1)
			}
			i++ // LZW minimum code size
			if err := skipSubBlocks(); err != nil {
				return frames, bad
			}
			frames++
		case 0x3b: // trailer
			return frames, nil
		default:
			if frames > 0 {
				return frames, nil // trailing garbage after real frames: as Go's decoder
			}
			return frames, bad
		}
	}
	if frames == 0 {
		return 0, bad
	}
	return frames, nil
}

// webpAnimated reports whether a WebP file has the animation flag of its
// VP8X header.
func webpAnimated(b []byte) bool {
	return len(b) >= 21 && string(b[0:4]) == "RIFF" && string(b[8:12]) == "WEBP" &&
		string(b[12:16]) == "VP8X" && b[20]&0x02 != 0
}

// geometry is how one thumbnail is cut from the source: the source
// rectangle to take and the output size.
type geometry struct {
	Src      image.Rectangle
	Out      image.Point
	Original bool // the source is no larger than asked: serve it as it is
}

// plan computes the geometry of a thumbnail of a w×h image. Nothing is
// ever scaled up.
func plan(w, h int, t ThumbSize) geometry {
	full := image.Rect(0, 0, w, h)
	if w <= t.Width && h <= t.Height {
		return geometry{Src: full, Out: image.Pt(w, h), Original: true}
	}
	switch t.Method {
	case Crop:
		// Scale so that the box is filled, then cut the middle.
		fx := float64(t.Width) / float64(w)
		fy := float64(t.Height) / float64(h)
		f := max(fx, fy)
		bw, bh := t.Width, t.Height
		if f > 1 {
			// The image is smaller than the box in one direction: take the
			// largest box of the requested aspect that fits, unscaled.
			bw = max(1, int(float64(t.Width)/f+0.5))
			bh = max(1, int(float64(t.Height)/f+0.5))
			f = 1
		}
		cw := min(w, max(1, int(float64(bw)/f+0.5)))
		ch := min(h, max(1, int(float64(bh)/f+0.5)))
		x0 := (w - cw) / 2
		y0 := (h - ch) / 2
		return geometry{Src: image.Rect(x0, y0, x0+cw, y0+ch), Out: image.Pt(bw, bh)}
	default:
		f := min(float64(t.Width)/float64(w), float64(t.Height)/float64(h))
		ow := max(1, int(float64(w)*f+0.5))
		oh := max(1, int(float64(h)*f+0.5))
		return geometry{Src: full, Out: image.Pt(ow, oh)}
	}
}

// resample scales the part g.Src of src to g.Out.
func resample(src image.Image, g geometry) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, g.Out.X, g.Out.Y))
	srcRect := g.Src.Add(src.Bounds().Min)
	if g.Src.Dx() == g.Out.X && g.Src.Dy() == g.Out.Y {
		draw.Draw(dst, dst.Bounds(), src, srcRect.Min, draw.Src)
		return dst
	}
	var k xdraw.Interpolator = xdraw.CatmullRom
	if g.Out.X*3 < srcRect.Dx() || int64(srcRect.Dx())*int64(srcRect.Dy()) > 16<<20 {
		// Strong reductions and very large sources: the kernel with half
		// the taps (still anti-aliased; the sharper one shows its worth
		// only near 1:1).
		k = xdraw.BiLinear
	}
	k.Scale(dst, dst.Bounds(), src, srcRect, xdraw.Src, nil)
	return dst
}

// encoded is a finished thumbnail.
type encoded struct {
	ContentType string
	Data        []byte
}

// encodeStill encodes a still thumbnail: JPEG when it is opaque, PNG when
// it has transparency.
func encodeStill(img *image.RGBA) (encoded, error) {
	var b bytes.Buffer
	if img.Opaque() {
		if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 85}); err != nil {
			return encoded{}, err
		}
		return encoded{"image/jpeg", b.Bytes()}, nil
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&b, img); err != nil {
		return encoded{}, err
	}
	return encoded{"image/png", b.Bytes()}, nil
}

// decodeStill decodes the first frame of an image onto a canvas of the
// image's full size (a GIF's first frame may cover only part of it).
func decodeStill(src []byte, info srcInfo) (image.Image, error) {
	img, _, err := image.Decode(bytes.NewReader(src))
	if err != nil {
		return nil, errNotImage
	}
	sw, sh := info.storedSize()
	full := image.Rect(0, 0, sw, sh)
	if img.Bounds() == full {
		switch img.(type) {
		case *image.RGBA, *image.NRGBA:
			return img, nil
		case *image.YCbCr:
			if int64(sw)*int64(sh) > 16<<20 {
				// A very large photo stays YCbCr (1.5 bytes a pixel, not 4).
				return img, nil
			}
		}
	}
	// Everything else (smaller photos' YCbCr, palettes, partial GIF frames)
	// becomes RGBA once: the resampler reads RGBA several times faster, and
	// each source pixel is read by several thumbnails.
	canvas := image.NewRGBA(full)
	draw.Draw(canvas, img.Bounds().Intersect(full), img, img.Bounds().Min, draw.Src)
	return canvas, nil
}

// stillThumbs makes still thumbnails of one decoded image for several
// sizes. Larger thumbnails are made first; a smaller one is cut from a
// larger "scale" one (the whole picture) when that one still has at least
// twice the pixels it needs, which is much cheaper than from the original.
func stillThumbs(img image.Image, info srcInfo, sizes []ThumbSize) ([]encoded, error) {
	order := make([]int, len(sizes))
	geo := make([]geometry, len(sizes))
	for i, t := range sizes {
		order[i] = i
		geo[i] = plan(info.Width, info.Height, t)
	}
	sort.SliceStable(order, func(a, b int) bool {
		ga, gb := geo[order[a]], geo[order[b]]
		return ga.Out.X*ga.Out.Y > gb.Out.X*gb.Out.Y
	})
	type whole struct {
		img *image.RGBA
		f   float64 // its size over the upright image's
	}
	var wholes []whole
	out := make([]encoded, len(sizes))
	for _, i := range order {
		g := geo[i]
		var thumb *image.RGBA
		for _, w := range wholes {
			need := 2 * max(float64(g.Out.X)/float64(g.Src.Dx()), float64(g.Out.Y)/float64(g.Src.Dy()))
			if w.f < need {
				continue
			}
			r := image.Rect(int(float64(g.Src.Min.X)*w.f+0.5), int(float64(g.Src.Min.Y)*w.f+0.5),
				int(float64(g.Src.Max.X)*w.f+0.5), int(float64(g.Src.Max.Y)*w.f+0.5)).Intersect(w.img.Rect)
			if r.Dx() >= g.Out.X && r.Dy() >= g.Out.Y {
				thumb = resample(w.img, geometry{Src: r, Out: g.Out})
				break
			}
		}
		if thumb == nil {
			thumb = fromOriginal(img, info, g)
		}
		if g.Src == image.Rect(0, 0, info.Width, info.Height) {
			wholes = append(wholes, whole{img: thumb, f: float64(g.Out.X) / float64(info.Width)})
		}
		e, err := encodeStill(thumb)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// fromOriginal cuts and scales a thumbnail from the decoded image.
func fromOriginal(img image.Image, info srcInfo, g geometry) *image.RGBA {
	o := info.Orientation
	if o <= 1 {
		return resample(img, g)
	}
	// Cut and scale in the stored orientation, then turn the result.
	sw, sh := info.storedSize()
	gs := geometry{Src: storedRect(g.Src, sw, sh, o), Out: g.Out}
	if swapsAxes(o) {
		gs.Out = image.Pt(g.Out.Y, g.Out.X)
	}
	return orient(resample(img, gs), o)
}

// animatedGIF makes an animated GIF thumbnail: every frame is composed onto
// the canvas as a viewer would show it, scaled, and mapped back to its palette.
func animatedGIF(src []byte, info srcInfo, t ThumbSize) (encoded, error) {
	all, err := gif.DecodeAll(bytes.NewReader(src))
	if err != nil || len(all.Image) == 0 {
		return encoded{}, errNotImage
	}
	g := plan(info.Width, info.Height, t)
	full := image.Rect(0, 0, info.Width, info.Height)
	canvas := image.NewRGBA(full)
	out := &gif.GIF{LoopCount: all.LoopCount, Config: image.Config{Width: g.Out.X, Height: g.Out.Y}}
	var restore *image.RGBA
	for i, fr := range all.Image {
		disposal := byte(0)
		if i < len(all.Disposal) {
			disposal = all.Disposal[i]
		}
		if disposal == gif.DisposalPrevious {
			restore = image.NewRGBA(full)
			copy(restore.Pix, canvas.Pix)
		}
		draw.Draw(canvas, fr.Bounds().Intersect(full), fr, fr.Bounds().Min, draw.Over)
		// Nearest-neighbour keeps every output colour one the frames
		// really use, so mapping back to the palette stays cheap.
		scaled := image.NewRGBA(image.Rect(0, 0, g.Out.X, g.Out.Y))
		xdraw.NearestNeighbor.Scale(scaled, scaled.Bounds(), canvas, g.Src, xdraw.Src, nil)
		pal := fr.Palette
		if len(pal) == 0 {
			pal = color.Palette{color.Transparent, color.Black, color.White}
		}
		out.Image = append(out.Image, toPaletted(scaled, pal))
		delay := 0
		if i < len(all.Delay) {
			delay = all.Delay[i]
		}
		out.Delay = append(out.Delay, delay)
		// Every output frame is a whole picture: clear before the next.
		out.Disposal = append(out.Disposal, gif.DisposalBackground)
		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, fr.Bounds().Intersect(full), image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			if restore != nil {
				copy(canvas.Pix, restore.Pix)
			}
		}
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, out); err != nil {
		return encoded{}, err
	}
	return encoded{"image/gif", b.Bytes()}, nil
}

// toPaletted maps an image onto a palette, remembering each colour's index.
func toPaletted(img *image.RGBA, pal color.Palette) *image.Paletted {
	pf := image.NewPaletted(img.Bounds(), pal)
	seen := make(map[uint32]uint8, 256)
	for i, j := 0, 0; i+3 < len(img.Pix); i, j = i+4, j+1 {
		p := img.Pix[i : i+4 : i+4]
		key := uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
		idx, ok := seen[key]
		if !ok {
			idx = uint8(pal.Index(color.RGBA{p[0], p[1], p[2], p[3]}))
			seen[key] = idx
		}
		pf.Pix[j] = idx
	}
	return pf
}
