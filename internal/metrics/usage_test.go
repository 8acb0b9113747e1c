package metrics

import (
	"testing"
	"time"
)

func gathered(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[mf.GetName()] += v
		}
	}
	return out
}

func TestUsageAndReadiness(t *testing.T) {
	const cert = "haven_federation_certificate_expiry_timestamp_seconds"
	if _, ok := gathered(t)[cert]; ok {
		t.Error("the certificate's expiry is exported before it is known")
	}
	at := time.Unix(1_800_000_000, 0)
	SetUsage(Users{Registered: 10, Active: 8, Deactivated: 2, Guests: 1, DailyActive: 3, MonthlyActive: 6}, Rooms{Total: 7, WithLocalMembers: 5}, at)
	SetCertificateExpiry(at.Add(90 * 24 * time.Hour))
	SetReady(map[string]bool{"database": true, "nats": true, "disk": false})
	g := gathered(t)
	for name, want := range map[string]float64{
		"haven_users_registered": 10, "haven_users_active": 8, "haven_users_deactivated": 2, "haven_users_guests": 1,
		"haven_users_daily_active": 3, "haven_users_monthly_active": 6, "haven_rooms": 7, "haven_rooms_with_local_members": 5,
		"haven_usage_updated_timestamp_seconds": 1_800_000_000, cert: float64(at.Add(90 * 24 * time.Hour).Unix()),
		"haven_ready": 0, "haven_ready_check": 2,
	} {
		if g[name] != want {
			t.Errorf("%s = %v, want %v", name, g[name], want)
		}
	}
	SetReady(map[string]bool{"database": true, "nats": true, "disk": true})
	if g := gathered(t); g["haven_ready"] != 1 || g["haven_ready_check"] != 3 {
		t.Errorf("all passing: ready %v, checks %v", g["haven_ready"], g["haven_ready_check"])
	}
}
