package roomserver

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
)

func TestParsePublicRoomsQuery(t *testing.T) {
	space := "m.space"
	for _, tc := range []struct {
		name    string
		post    bool
		query   string
		body    string
		want    PublicRoomsQuery
		wantErr string // errcode
	}{
		{name: "GET empty", want: PublicRoomsQuery{}},
		{name: "GET limit since", query: "limit=5&since=abc", want: PublicRoomsQuery{Limit: 5, Since: "abc"}},
		{name: "GET third party", query: "third_party_instance_id=irc", want: PublicRoomsQuery{ThirdPartyInstanceID: "irc"}},
		{name: "GET bad limit", query: "limit=five", wantErr: "M_INVALID_PARAM"},
		{name: "GET negative limit", query: "limit=-1", wantErr: "M_INVALID_PARAM"},
		{name: "GET bad include_all_networks", query: "include_all_networks=yes", wantErr: "M_INVALID_PARAM"},
		{name: "GET all networks and one network", query: "include_all_networks=true&third_party_instance_id=irc", wantErr: "M_INVALID_PARAM"},
		{name: "POST filter", post: true, body: `{"limit":3,"filter":{"generic_search_term":"eng","room_types":[null,"m.space"]}}`,
			want: PublicRoomsQuery{Limit: 3, Search: "eng", RoomTypes: []*string{nil, &space}}},
		{name: "POST query ignored", post: true, query: "limit=9", body: `{}`, want: PublicRoomsQuery{}},
		{name: "POST negative limit", post: true, body: `{"limit":-4}`, wantErr: "M_INVALID_PARAM"},
		{name: "POST all networks and one network", post: true, body: `{"include_all_networks":true,"third_party_instance_id":"irc"}`, wantErr: "M_INVALID_PARAM"},
		{name: "POST bad body", post: true, body: `{"limit":"x"}`, wantErr: "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			decode := func(v any) error {
				if err := json.Unmarshal([]byte(tc.body), v); err != nil {
					return merr.BadJSON("%v", err)
				}
				return nil
			}
			got, err := ParsePublicRoomsQuery(tc.post, q, decode)
			if tc.wantErr != "" {
				var e *merr.Error
				if !errors.As(err, &e) || e.Code != tc.wantErr {
					t.Fatalf("error %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}
