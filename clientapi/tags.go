package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// tagStore reads and updates room account data (room tags are the m.tag entry).
type tagStore interface {
	GetAccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
	UpdateAccountData(ctx context.Context, userID, roomID, typ string, update func(old json.RawMessage) (json.RawMessage, error)) error
}

func (a *API) tagRoutes() []Route {
	base := v3 + "/user/{userId}/rooms/{roomId}/tags"
	return []Route{
		{Method: "GET", Path: base, H: a.getTags, Auth: authUser},
		{Method: "PUT", Path: base + "/{tag}", H: a.putTag, Auth: authUser},
		{Method: "DELETE", Path: base + "/{tag}", H: a.deleteTag, Auth: authUser},
	}
}

type tagContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

func (a *API) ownTags(r *http.Request) (string, string, error) {
	d := DeviceFrom(r)
	if PathParam(r, "userId") != d.UserID {
		return "", "", merr.Forbidden("You can only see and change your own tags")
	}
	roomID := PathParam(r, "roomId")
	if roomID == "" || roomID[0] != '!' {
		return "", "", merr.InvalidParam("Invalid room ID")
	}
	return d.UserID, roomID, nil
}

func (a *API) getTags(w http.ResponseWriter, r *http.Request) error {
	userID, roomID, err := a.ownTags(r)
	if err != nil {
		return err
	}
	c := tagContent{Tags: map[string]json.RawMessage{}}
	raw, err := a.Tags.GetAccountData(r.Context(), userID, roomID, "m.tag")
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return err
	}
	if raw != nil {
		_ = json.Unmarshal(raw, &c)
		if c.Tags == nil {
			c.Tags = map[string]json.RawMessage{}
		}
	}
	return httpx.JSON(w, http.StatusOK, c)
}

func (a *API) changeTag(r *http.Request, fn func(tags map[string]json.RawMessage) error) error {
	userID, roomID, err := a.ownTags(r)
	if err != nil {
		return err
	}
	return a.Tags.UpdateAccountData(r.Context(), userID, roomID, "m.tag", func(old json.RawMessage) (json.RawMessage, error) {
		c := tagContent{}
		if old != nil {
			_ = json.Unmarshal(old, &c)
		}
		if c.Tags == nil {
			c.Tags = map[string]json.RawMessage{}
		}
		if err := fn(c.Tags); err != nil {
			return nil, err
		}
		return json.Marshal(c)
	})
}

func (a *API) putTag(w http.ResponseWriter, r *http.Request) error {
	tag := PathParam(r, "tag")
	if tag == "" || len(tag) > 255 {
		return merr.InvalidParam("Invalid tag")
	}
	var body struct {
		Order *float64 `json:"order"`
	}
	raw, err := httpx.ReadBody(r, 4<<10)
	if err != nil {
		return err
	}
	if err := httpx.Unmarshal(raw, &body); err != nil {
		return err
	}
	if body.Order != nil && (*body.Order < 0 || *body.Order > 1) {
		return merr.InvalidParam("order must be between 0 and 1")
	}
	value := json.RawMessage("{}")
	if body.Order != nil {
		value, _ = json.Marshal(map[string]float64{"order": *body.Order})
	}
	if err := a.changeTag(r, func(tags map[string]json.RawMessage) error {
		if _, ok := tags[tag]; !ok && len(tags) >= 500 {
			return merr.InvalidParam("A room can have at most 500 tags")
		}
		tags[tag] = value
		return nil
	}); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deleteTag(w http.ResponseWriter, r *http.Request) error {
	tag := PathParam(r, "tag")
	if err := a.changeTag(r, func(tags map[string]json.RawMessage) error { delete(tags, tag); return nil }); err != nil {
		return err
	}
	return httpx.OK(w)
}
