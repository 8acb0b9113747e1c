package mediaapi

import (
	"encoding/binary"
	"image"
)

// JPEG photos from phones are often stored sideways with an EXIF
// orientation tag that viewers apply. Thumbnails are made upright: the
// geometry is planned on the upright image, the matching rectangle of the
// stored image is scaled, and only the small result is turned.

// jpegOrientation returns the EXIF orientation (1 to 8) of a JPEG, 1 when
// it has none or it cannot be read.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xff || b[1] != 0xd8 {
		return 1
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xff {
			return 1
		}
		marker := b[i+1]
		if marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7) {
			i += 2
			continue
		}
		if marker == 0xda || marker == 0xd9 { // start of scan, end of image
			return 1
		}
		n := int(binary.BigEndian.Uint16(b[i+2:]))
		if n < 2 || i+2+n > len(b) {
			return 1
		}
		seg := b[i+4 : i+2+n]
		if marker == 0xe1 && len(seg) > 6 && string(seg[:6]) == "Exif\x00\x00" {
			return exifOrientation(seg[6:])
		}
		i += 2 + n
	}
	return 1
}

// exifOrientation reads tag 0x0112 of IFD0 of a TIFF structure.
func exifOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	off := int(bo.Uint32(t[4:]))
	if off < 8 || off+2 > len(t) {
		return 1
	}
	count := int(bo.Uint16(t[off:]))
	for k := 0; k < count; k++ {
		e := off + 2 + 12*k
		if e+12 > len(t) {
			return 1
		}
		if bo.Uint16(t[e:]) == 0x0112 && bo.Uint16(t[e+2:]) == 3 { // SHORT
			v := int(bo.Uint16(t[e+8:]))
			if v >= 1 && v <= 8 {
				return v
			}
			return 1
		}
	}
	return 1
}

// swapsAxes tells whether an orientation turns the image by 90 degrees.
func swapsAxes(o int) bool { return o >= 5 && o <= 8 }

// storedRect maps a rectangle of the upright image (w×h stored pixels,
// orientation o) back to the stored image.
func storedRect(r image.Rectangle, w, h, o int) image.Rectangle {
	u0, u1, v0, v1 := r.Min.X, r.Max.X, r.Min.Y, r.Max.Y
	switch o {
	case 2:
		return image.Rect(w-u1, v0, w-u0, v1)
	case 3:
		return image.Rect(w-u1, h-v1, w-u0, h-v0)
	case 4:
		return image.Rect(u0, h-v1, u1, h-v0)
	case 5:
		return image.Rect(v0, u0, v1, u1)
	case 6:
		return image.Rect(v0, h-u1, v1, h-u0)
	case 7:
		return image.Rect(w-v1, h-u1, w-v0, h-u0)
	case 8:
		return image.Rect(w-v1, u0, w-v0, u1)
	}
	return r
}

// orient turns a stored-orientation image upright.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o < 2 || o > 8 {
		return src
	}
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := w, h
	if swapsAxes(o) {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var u, v int
			switch o {
			case 2:
				u, v = w-1-x, y
			case 3:
				u, v = w-1-x, h-1-y
			case 4:
				u, v = x, h-1-y
			case 5:
				u, v = y, x
			case 6:
				u, v = h-1-y, x
			case 7:
				u, v = h-1-y, w-1-x
			case 8:
				u, v = y, w-1-x
			}
			si := src.PixOffset(src.Rect.Min.X+x, src.Rect.Min.Y+y)
			di := dst.PixOffset(u, v)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}
