package storage

import (
	"reflect"
	"testing"
)

func TestExpand(t *testing.T) {
	cases := []struct {
		name     string
		q        string
		args     []any
		wantQ    string
		wantArgs []any
	}{
		{"no lists", "SELECT $1, $2", []any{1, "a"}, "SELECT $1, $2", []any{1, "a"}},
		{"list first", "SELECT x FROM t WHERE a IN ($1) AND b = $2", []any{[]string{"x", "y"}, 5},
			"SELECT x FROM t WHERE a IN ($1,$2) AND b = $3", []any{"x", "y", 5}},
		{"list last", "WHERE b = $1 AND a IN ($2)", []any{5, []int64{7, 8, 9}},
			"WHERE b = $1 AND a IN ($2,$3,$4)", []any{5, int64(7), int64(8), int64(9)}},
		{"empty list", "WHERE a IN ($1) AND b = $2", []any{[]string{}, 1},
			"WHERE a IN (NULL) AND b = $1", []any{1}},
		{"quoted dollar", "SELECT '$1' WHERE a IN ($1)", []any{[]string{"q"}},
			"SELECT '$1' WHERE a IN ($1)", []any{"q"}},
		{"bytes are not lists", "SELECT $1", []any{[]byte("x")}, "SELECT $1", []any{[]byte("x")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, a := expand(c.q, c.args)
			if q != c.wantQ || !reflect.DeepEqual(a, c.wantArgs) {
				t.Fatalf("got %q %v, want %q %v", q, a, c.wantQ, c.wantArgs)
			}
		})
	}
}
