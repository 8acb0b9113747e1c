package mediaapi

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"testing"
)

func TestPlanGeometry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		w, h     int
		size     ThumbSize
		src      image.Rectangle
		out      image.Point
		original bool
	}{
		{"crop wide", 1000, 500, ThumbSize{96, 96, Crop}, image.Rect(250, 0, 750, 500), image.Pt(96, 96), false},
		{"crop tall", 500, 1000, ThumbSize{96, 96, Crop}, image.Rect(0, 250, 500, 750), image.Pt(96, 96), false},
		{"crop 4:3 to square", 640, 480, ThumbSize{32, 32, Crop}, image.Rect(80, 0, 560, 480), image.Pt(32, 32), false},
		{"crop to 4:3", 1000, 1000, ThumbSize{320, 240, Crop}, image.Rect(0, 125, 1000, 875), image.Pt(320, 240), false},
		{"crop never upscales", 1000, 50, ThumbSize{96, 96, Crop}, image.Rect(475, 0, 525, 50), image.Pt(50, 50), false},
		{"scale wide", 1000, 500, ThumbSize{320, 240, Scale}, image.Rect(0, 0, 1000, 500), image.Pt(320, 160), false},
		{"scale tall", 600, 1200, ThumbSize{800, 600, Scale}, image.Rect(0, 0, 600, 1200), image.Pt(300, 600), false},
		{"scale exact", 1600, 1200, ThumbSize{800, 600, Scale}, image.Rect(0, 0, 1600, 1200), image.Pt(800, 600), false},
		{"scale thin keeps one pixel", 5000, 2, ThumbSize{320, 240, Scale}, image.Rect(0, 0, 5000, 2), image.Pt(320, 1), false},
		{"smaller than box: original", 100, 50, ThumbSize{320, 240, Scale}, image.Rect(0, 0, 100, 50), image.Pt(100, 50), true},
		{"equal to box: original", 96, 96, ThumbSize{96, 96, Crop}, image.Rect(0, 0, 96, 96), image.Pt(96, 96), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := plan(tc.w, tc.h, tc.size)
			if g.Src != tc.src || g.Out != tc.out || g.Original != tc.original {
				t.Fatalf("plan(%d, %d, %v) = %+v, want src %v out %v original %v", tc.w, tc.h, tc.size, g, tc.src, tc.out, tc.original)
			}
			// Never larger than the source, never larger than the box unless
			// the box is larger than the source.
			if g.Out.X > tc.w || g.Out.Y > tc.h {
				t.Fatalf("upscaled: %+v", g)
			}
		})
	}
}

func TestPickSize(t *testing.T) {
	for _, tc := range []struct {
		w, h     int
		m        Method
		want     ThumbSize
		standard bool
	}{
		{32, 32, Crop, ThumbSize{32, 32, Crop}, true},
		{40, 40, Crop, ThumbSize{96, 96, Crop}, true},
		{96, 96, Scale, ThumbSize{320, 240, Scale}, true},
		{800, 600, Scale, ThumbSize{800, 600, Scale}, true},
		{641, 100, Scale, ThumbSize{800, 600, Scale}, true},
		{200, 200, Crop, ThumbSize{200, 200, Crop}, false},
		{1024, 768, Scale, ThumbSize{1024, 768, Scale}, false},
	} {
		got, std := pickSize(tc.w, tc.h, tc.m)
		if got != tc.want || std != tc.standard {
			t.Errorf("pickSize(%d, %d, %s) = %v %v, want %v %v", tc.w, tc.h, tc.m, got, std, tc.want, tc.standard)
		}
	}
}

// TestStillThumbnailsPerFormat makes the standard sizes of each format and
// decodes them again.
func TestStillThumbnailsPerFormat(t *testing.T) {
	for _, tc := range []struct {
		name     string
		data     []byte
		w, h     int
		wantType string // of the thumbnails
	}{
		{"jpeg", makeJPEG(t, 1200, 900), 1200, 900, "image/jpeg"},
		{"png opaque", makePNG(t, 1000, 800, false), 1000, 800, "image/jpeg"},
		{"png transparent", makePNG(t, 1000, 800, true), 1000, 800, "image/png"},
		{"gif first frame", makeGIF(t, 900, 700, 3), 900, 700, "image/png"},
		{"webp opaque", makeWebP(1000, 700, color.NRGBA{10, 200, 30, 255}), 1000, 700, "image/jpeg"},
		{"webp alpha", makeWebP(1000, 700, color.NRGBA{10, 200, 30, 100}), 1000, 700, "image/png"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := probe(tc.data, 50_000_000)
			if err != nil {
				t.Fatal(err)
			}
			if info.Width != tc.w || info.Height != tc.h {
				t.Fatalf("probe: %+v", info)
			}
			img, err := decodeStill(tc.data, info)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := stillThumbs(img, info, StandardSizes)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range enc {
				want := plan(tc.w, tc.h, StandardSizes[i]).Out
				if e.ContentType != tc.wantType {
					t.Errorf("%v: type %s, want %s", StandardSizes[i], e.ContentType, tc.wantType)
				}
				cfg, format, err := image.DecodeConfig(bytes.NewReader(e.Data))
				if err != nil {
					t.Fatalf("%v: decode: %v", StandardSizes[i], err)
				}
				if "image/"+format != e.ContentType || cfg.Width != want.X || cfg.Height != want.Y {
					t.Errorf("%v: got %s %dx%d, want %dx%d", StandardSizes[i], format, cfg.Width, cfg.Height, want.X, want.Y)
				}
				if s := StandardSizes[i]; s.Method == Crop && (cfg.Width != s.Width || cfg.Height != s.Height) {
					t.Errorf("crop %v is %dx%d", s, cfg.Width, cfg.Height)
				}
			}
		})
	}
}

func TestAnimatedGIFThumbnail(t *testing.T) {
	src := makeGIF(t, 400, 200, 4)
	info, err := probe(src, 50_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Animated || info.Frames != 4 {
		t.Fatalf("probe: %+v", info)
	}
	for _, size := range []ThumbSize{{96, 96, Crop}, {320, 240, Scale}} {
		e, err := animatedGIF(src, info, size)
		if err != nil {
			t.Fatal(err)
		}
		g, err := gif.DecodeAll(bytes.NewReader(e.Data))
		if err != nil {
			t.Fatal(err)
		}
		want := plan(400, 200, size).Out
		if len(g.Image) != 4 || g.Config.Width != want.X || g.Config.Height != want.Y {
			t.Fatalf("%v: %d frames of %dx%d, want 4 of %v", size, len(g.Image), g.Config.Width, g.Config.Height, want)
		}
		for _, fr := range g.Image {
			if fr.Bounds() != image.Rect(0, 0, want.X, want.Y) {
				t.Fatalf("frame bounds %v", fr.Bounds())
			}
		}
	}
	// A still GIF is not animated.
	still := makeGIF(t, 50, 50, 1)
	if info, err := probe(still, 50_000_000); err != nil || info.Animated {
		t.Fatalf("still gif: %+v %v", info, err)
	}
}

func TestProbeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"png bomb", makePNGBomb(20000, 20000), errTooManyPx},
		{"gif bomb", []byte("GIF89a\x60\xea\x60\xea\x00\x00\x00;"), errTooManyPx},
		{"text", []byte("hello, world"), errNotImage},
		{"empty", nil, errNotImage},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`), errNotImage},
		{"truncated png", makePNG(t, 100, 100, false)[:20], errNotImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := probe(tc.data, 50_000_000)
			if !errors.Is(err, tc.want) {
				t.Fatalf("probe: %v, want %v", err, tc.want)
			}
		})
	}
	info, err := probe(makeAnimatedWebPHeader(300, 200), 50_000_000)
	if err != nil || !info.Animated || info.Width != 300 || info.Height != 200 {
		t.Fatalf("animated webp: %+v %v", info, err)
	}
}

func TestGIFFramesMalformed(t *testing.T) {
	good := makeGIF(t, 40, 30, 3)
	if n, err := gifFrames(good); err != nil || n != 3 {
		t.Fatalf("gifFrames = %d, %v", n, err)
	}
	for i := 0; i < len(good)-1; i++ {
		// Never panics, whatever the cut.
		_, _ = gifFrames(good[:i])
	}
}

// TestOrientation: a rectangle of the upright image, cut from the stored
// image with storedRect and turned, is the same as cut from the turned image.
func TestOrientation(t *testing.T) {
	const w, h = 7, 5
	stored := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range stored.Pix {
		stored.Pix[i] = uint8(i)
	}
	for o := 1; o <= 8; o++ {
		upright := orient(stored, o)
		uw, uh := w, h
		if swapsAxes(o) {
			uw, uh = h, w
		}
		if upright.Rect.Dx() != uw || upright.Rect.Dy() != uh {
			t.Fatalf("orientation %d: upright is %v", o, upright.Rect)
		}
		for _, r := range []image.Rectangle{image.Rect(0, 0, uw, uh), image.Rect(1, 2, 3, 4), image.Rect(0, 1, uw, 3)} {
			sr := storedRect(r, w, h, o)
			part := image.NewRGBA(image.Rect(0, 0, sr.Dx(), sr.Dy()))
			for y := 0; y < sr.Dy(); y++ {
				for x := 0; x < sr.Dx(); x++ {
					part.Set(x, y, stored.At(sr.Min.X+x, sr.Min.Y+y))
				}
			}
			got := orient(part, o)
			for y := 0; y < r.Dy(); y++ {
				for x := 0; x < r.Dx(); x++ {
					if got.At(x, y) != upright.At(r.Min.X+x, r.Min.Y+y) {
						t.Fatalf("orientation %d, rect %v: pixel %d,%d differs", o, r, x, y)
					}
				}
			}
		}
	}
}

// withOrientation puts an EXIF orientation tag into a JPEG.
func withOrientation(jpg []byte, o uint16) []byte {
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, byte(o >> 8), byte(o), 0, 0, 0, 0, 0, 0}
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := []byte{0xff, 0xe1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}
	out := append([]byte{}, jpg[:2]...)
	out = append(out, app1...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestRotatedJPEGThumbnail(t *testing.T) {
	// Stored 1200x600: left half red, right half blue; orientation 6 (turn
	// clockwise): upright 600x1200, red on top, blue below.
	img := image.NewRGBA(image.Rect(0, 0, 1200, 600))
	for y := 0; y < 600; y++ {
		for x := 0; x < 1200; x++ {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 600 {
				c = color.RGBA{0, 0, 255, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	src := withOrientation(b.Bytes(), 6)
	if o := jpegOrientation(src); o != 6 {
		t.Fatalf("orientation %d", o)
	}
	info, err := probe(src, 50_000_000)
	if err != nil || info.Width != 600 || info.Height != 1200 {
		t.Fatalf("probe: %+v %v", info, err)
	}
	dec, err := decodeStill(src, info)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := stillThumbs(dec, info, []ThumbSize{{320, 240, Scale}, {96, 96, Crop}})
	if err != nil {
		t.Fatal(err)
	}
	th, err := jpeg.Decode(bytes.NewReader(enc[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if th.Bounds().Dx() != 120 || th.Bounds().Dy() != 240 {
		t.Fatalf("scaled to %v", th.Bounds())
	}
	if r, _, bl, _ := th.At(60, 30).RGBA(); r < 0xc000 || bl > 0x4000 {
		t.Errorf("top is not red: %v", th.At(60, 30))
	}
	if r, _, bl, _ := th.At(60, 210).RGBA(); bl < 0xc000 || r > 0x4000 {
		t.Errorf("bottom is not blue: %v", th.At(60, 210))
	}
	for _, bad := range [][]byte{nil, {0xff, 0xd8}, withOrientation(b.Bytes(), 9), []byte("not a jpeg")} {
		if o := jpegOrientation(bad); o != 1 {
			t.Errorf("orientation %d from %q", o, bad[:min(len(bad), 8)])
		}
	}
}

// FuzzProbe feeds arbitrary bytes to the parts that read untrusted image
// headers: they may refuse, never panic or allocate without bound.
func FuzzProbe(f *testing.F) {
	f.Add(makePNG(f, 40, 30, true))
	f.Add(makeJPEG(f, 40, 30))
	f.Add(withOrientation(makeJPEG(f, 40, 30), 8))
	f.Add(makeGIF(f, 40, 30, 3))
	f.Add(makeWebP(40, 30, color.NRGBA{1, 2, 3, 4}))
	f.Add(makeAnimatedWebPHeader(40, 30))
	f.Add(makePNGBomb(5000, 5000))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = jpegOrientation(b)
		_, _ = gifFrames(b)
		info, err := probe(b, 1<<20)
		if err != nil {
			return
		}
		img, err := decodeStill(b, info)
		if err != nil {
			return
		}
		if _, err := stillThumbs(img, info, []ThumbSize{{32, 32, Crop}, {20, 10, Scale}}); err != nil {
			t.Fatal(err)
		}
		if info.Animated && info.Format == "gif" && int64(info.Frames)*int64(info.Width)*int64(info.Height) <= 1<<20 {
			_, _ = animatedGIF(b, info, ThumbSize{16, 16, Crop})
		}
	})
}
