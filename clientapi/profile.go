package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// profilePropagator updates a user's m.room.member events in the rooms
// they have joined after a profile change (the roomserver).
type profilePropagator interface {
	PropagateProfile(ctx context.Context, userID string) error
}

// profileVisibility answers whether one user may see another's profile
// when profiles.limit_to_shared_rooms is on (the roomserver).
type profileVisibility interface {
	ProfileVisible(ctx context.Context, viewer, target string) (bool, error)
}

func (a *API) profileRoutes() []Route {
	// Look-ups need an access token unless profiles.require_token is off.
	read := authUser
	if !a.Cfg.Profiles.RequireToken {
		read = authOptional
	}
	return []Route{
		{Method: "GET", Path: v3 + "/profile/{userId}", H: a.getProfile, Auth: read},
		{Method: "GET", Path: v3 + "/profile/{userId}/displayname", H: a.getDisplayName, Auth: read},
		{Method: "PUT", Path: v3 + "/profile/{userId}/displayname", H: a.putDisplayName, Auth: authUser},
		{Method: "GET", Path: v3 + "/profile/{userId}/avatar_url", H: a.getAvatarURL, Auth: read},
		{Method: "PUT", Path: v3 + "/profile/{userId}/avatar_url", H: a.putAvatarURL, Auth: authUser},
	}
}

// RemoteProfiles asks other servers for their users' profiles.
type RemoteProfiles interface {
	RemoteProfile(ctx context.Context, userID string) (displayname, avatarURL string, err error)
}

// profile is a user's profile: a local one from the user API, another
// server's user's from that server (with federation on).
func (a *API) profile(ctx context.Context, userID string) (userapi.Profile, error) {
	if a.RemoteProfiles != nil && ids.ValidUserID(userID) && ids.ServerOf(userID, '@') != a.Cfg.ServerName {
		dn, av, err := a.RemoteProfiles.RemoteProfile(ctx, userID)
		return userapi.Profile{DisplayName: dn, AvatarURL: av}, err
	}
	return a.Users.GetProfile(ctx, userID)
}

// lookUpProfile is a profile look-up by the requester: with
// profiles.limit_to_shared_rooms, only of users they share a room with or
// could find in the user directory (403 M_FORBIDDEN otherwise, the same
// whether the user exists or not).
func (a *API) lookUpProfile(r *http.Request) (userapi.Profile, error) {
	target := PathParam(r, "userId")
	if a.Cfg.Profiles.LimitToSharedRooms {
		if !HasDevice(r) {
			return userapi.Profile{}, merr.MissingToken("Profile look-ups need an access token on this server")
		}
		ok := a.ProfileVisibility == nil
		if !ok {
			var err error
			if ok, err = a.ProfileVisibility.ProfileVisible(r.Context(), DeviceFrom(r).UserID, target); err != nil {
				return userapi.Profile{}, err
			}
		}
		if !ok {
			return userapi.Profile{}, merr.Forbidden("You do not share a room with this user")
		}
	}
	return a.profile(r.Context(), target)
}

func (a *API) getProfile(w http.ResponseWriter, r *http.Request) error {
	p, err := a.lookUpProfile(r)
	if err != nil {
		return err
	}
	body := map[string]string{}
	if p.DisplayName != "" {
		body["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		body["avatar_url"] = p.AvatarURL
	}
	return httpx.JSON(w, http.StatusOK, body)
}

func (a *API) getDisplayName(w http.ResponseWriter, r *http.Request) error {
	p, err := a.lookUpProfile(r)
	if err != nil {
		return err
	}
	body := map[string]string{}
	if p.DisplayName != "" {
		body["displayname"] = p.DisplayName
	}
	return httpx.JSON(w, http.StatusOK, body)
}

func (a *API) getAvatarURL(w http.ResponseWriter, r *http.Request) error {
	p, err := a.lookUpProfile(r)
	if err != nil {
		return err
	}
	body := map[string]string{}
	if p.AvatarURL != "" {
		body["avatar_url"] = p.AvatarURL
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// ownProfile checks that the path names the requesting user.
func ownProfile(r *http.Request) (string, error) {
	userID := PathParam(r, "userId")
	if userID != DeviceFrom(r).UserID {
		return "", merr.Forbidden("You cannot change another user's profile")
	}
	return userID, nil
}

func (a *API) putDisplayName(w http.ResponseWriter, r *http.Request) error {
	userID, err := ownProfile(r)
	if err != nil {
		return err
	}
	var req struct {
		DisplayName *string `json:"displayname"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	if req.DisplayName == nil {
		return merr.MissingParam("Missing displayname")
	}
	if err := a.Users.SetDisplayName(r.Context(), userID, *req.DisplayName); err != nil {
		return err
	}
	a.propagateProfile(r.Context(), userID)
	return httpx.OK(w)
}

func (a *API) putAvatarURL(w http.ResponseWriter, r *http.Request) error {
	userID, err := ownProfile(r)
	if err != nil {
		return err
	}
	var req struct {
		AvatarURL *string `json:"avatar_url"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	if req.AvatarURL == nil {
		return merr.MissingParam("Missing avatar_url")
	}
	if err := a.Users.SetAvatarURL(r.Context(), userID, *req.AvatarURL); err != nil {
		return err
	}
	a.propagateProfile(r.Context(), userID)
	return httpx.OK(w)
}

// propagateProfile updates the user's membership events after the profile
// change has committed. A failure is logged: the profile itself is saved.
func (a *API) propagateProfile(ctx context.Context, userID string) {
	if a.Propagator == nil {
		return
	}
	if err := a.Propagator.PropagateProfile(ctx, userID); err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", userID).Warn("profile change not propagated to all rooms")
	}
}
