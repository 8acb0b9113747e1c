package storage

import (
	"reflect"
	"strconv"
	"strings"
)

// expand rewrites a query whose arguments include slices (other than []byte):
// the placeholder $k of a slice argument becomes $k, $k+1, ... one per element
// and later placeholders are renumbered. So `WHERE room_id IN ($1)` with a
// []string works on both databases with one SQL text. An empty slice becomes
// NULL, which matches nothing.
func expand(query string, args []any) (string, []any) {
	hasSlice := false
	for _, a := range args {
		if isList(a) {
			hasSlice = true
			break
		}
	}
	if !hasSlice {
		return query, args
	}
	// newIndex[i] is the first new placeholder number of old argument i+1.
	newArgs := make([]any, 0, len(args)*2)
	first := make([]int, len(args))
	count := make([]int, len(args))
	for i, a := range args {
		first[i] = len(newArgs) + 1
		if isList(a) {
			v := reflect.ValueOf(a)
			for j := 0; j < v.Len(); j++ {
				newArgs = append(newArgs, v.Index(j).Interface())
			}
			count[i] = v.Len()
		} else {
			newArgs = append(newArgs, a)
			count[i] = 1
		}
	}
	var b strings.Builder
	b.Grow(len(query) + 16*len(newArgs))
	inQuote := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c == '\'' {
			inQuote = !inQuote
		}
		if c != '$' || inQuote {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for j < len(query) && query[j] >= '0' && query[j] <= '9' {
			j++
		}
		if j == i+1 {
			b.WriteByte(c)
			continue
		}
		n, _ := strconv.Atoi(query[i+1 : j])
		if n < 1 || n > len(args) {
			b.WriteString(query[i:j])
			i = j - 1
			continue
		}
		if count[n-1] == 0 {
			b.WriteString("NULL")
		} else {
			for k := 0; k < count[n-1]; k++ {
				if k > 0 {
					b.WriteByte(',')
				}
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(first[n-1] + k))
			}
		}
		i = j - 1
	}
	return b.String(), newArgs
}

func isList(a any) bool {
	switch a.(type) {
	case []string, []int64, []int, []any:
		return true
	}
	return false
}
