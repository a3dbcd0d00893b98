// Go client side of bench/clients: writes raw samples as JSON to CODEMODE_BENCH_OUT.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"strconv"
	"time"

	codemode "github.com/codemode-dev/codemode/clients/go"
)

const (
	roundTripCode   = "1+1"
	firstStdoutCode = "import time\nprint('a', flush=True)\ntime.sleep(0.5)"
)

func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func main() {
	warmup, rounds, first := envInt("BENCH_WARMUP"), envInt("BENCH_ROUNDS"), envInt("BENCH_FIRST_STDOUT")
	client, err := codemode.Dial(os.Getenv("CODEMODE_CONFORMANCE_TARGET"), codemode.WithInsecure(),
		codemode.WithToken(os.Getenv("CODEMODE_CONFORMANCE_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	session, err := client.CreateSession(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	samples := map[string][]float64{"round_trip_ms": {}, "first_stdout_ms": {}}
	for i := 0; i < warmup+rounds; i++ {
		start := time.Now()
		result, err := session.Run(ctx, roundTripCode)
		elapsed := time.Since(start)
		if err != nil || result.Value.GetJson() != "2" {
			log.Fatalf("1+1: %v %v", err, result)
		}
		if i >= warmup {
			samples["round_trip_ms"] = append(samples["round_trip_ms"], ms(elapsed))
		}
	}
	for i := 0; i < first; i++ {
		start := time.Now()
		seen := false
		for event, err := range session.Stream(ctx, firstStdoutCode) {
			if err != nil {
				log.Fatal(err)
			}
			if event.GetOutput() != nil && !seen {
				seen = true
				samples["first_stdout_ms"] = append(samples["first_stdout_ms"], ms(time.Since(start)))
			}
		}
	}
	out, _ := json.Marshal(samples)
	if err := os.WriteFile(os.Getenv("CODEMODE_BENCH_OUT"), out, 0o644); err != nil {
		log.Fatal(err)
	}
}
