package server

import (
	"github.com/haven-chat/haven/adminapi/reports"
	"github.com/haven-chat/haven/adminapi/rooms"
	"github.com/haven-chat/haven/adminapi/stats"
	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/userapi/roomkeys"
)

// roomDataPurger is an owner of room rows outside the roomserver.
type roomDataPurger = rooms.RoomDataPurger

// wireAdminRooms adds the room, media and statistics half of the admin
// API. Its background jobs stop before the roomserver closes.
func (a *App) wireAdminRooms(api *clientapi.API, media *mediaapi.Service) {
	api.Areas = append(api.Areas, api.AdminStatsArea(stats.New(a.DB, a.Cfg.ServerName)))
	if a.Rooms == nil || a.Sync == nil {
		return
	}
	purgers := append([]roomDataPurger{a.Sync, a.Users, roomkeys.New(a.DB), reports.New(a.DB)}, a.roomData...)
	jobs := rooms.New(a.DB, a.Rooms, a.Sync, purgers...)
	a.closers = append(a.closers, jobs.Close)
	api.Areas = append(api.Areas, api.AdminRoomsArea(a.Rooms, jobs, a.Sync, a.Users), api.AdminMediaArea(media, a.Rooms, a.Users))
	api.Areas = append(api.Areas, api.AdminRoomMessagesArea(a.Sync), api.AdminMediaCareArea(media, a.Users, a.Rooms))
}
