package dev.ferry.samples.checkout;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.cloud.client.loadbalancer.LoadBalanced;
import org.springframework.cloud.openfeign.EnableFeignClients;
import org.springframework.cloud.openfeign.FeignClient;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.http.client.SimpleClientHttpRequestFactory;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.client.RestTemplate;

/**
 * A stock Spring Cloud caller: it reaches {@code orders} by service name through Spring Cloud
 * LoadBalancer (a {@code @LoadBalanced} RestTemplate) and through OpenFeign.
 *
 * <p>{@code GET /drive?via=rest|feign&rate=N&seconds=S} sends N calls a second for S seconds
 * (bounded) and reports successes, failures, who answered and when the first call carrying a
 * trace header (added on the way, e.g. by a proxy) was answered; {@code POST /drive/stop} ends
 * the running drives early (they report what they did).
 * {@code GET /peers/{service}} lists what this app's DiscoveryClient sees.
 */
@SpringBootApplication
@RestController
@EnableFeignClients
public class CheckoutApplication {

    static final int MAX_RATE = 200;
    static final int MAX_SECONDS = 600;

    @FeignClient(name = "orders")
    public interface OrdersClient {
        @GetMapping("/whoami")
        Map<String, Object> whoami();
    }

    /** Its own class: the controller below takes the RestTemplate in its constructor. */
    @Configuration
    static class Clients {
        @Bean
        @LoadBalanced
        RestTemplate restTemplate() {
            SimpleClientHttpRequestFactory factory = new SimpleClientHttpRequestFactory();
            factory.setConnectTimeout(2000);
            factory.setReadTimeout(5000);
            return new RestTemplate(factory);
        }
    }

    /** Set by POST /drive/stop; every running drive ends at its next call. */
    private final AtomicBoolean stopDrives = new AtomicBoolean();

    private final RestTemplate restTemplate;
    private final OrdersClient ordersClient;
    private final DiscoveryClient discoveryClient;

    public CheckoutApplication(RestTemplate restTemplate, OrdersClient ordersClient,
            DiscoveryClient discoveryClient) {
        this.restTemplate = restTemplate;
        this.ordersClient = ordersClient;
        this.discoveryClient = discoveryClient;
    }

    public static void main(String[] args) {
        SpringApplication.run(CheckoutApplication.class, args);
    }

    @GetMapping("/call")
    public Map<String, Object> call(@RequestParam(defaultValue = "rest") String via) {
        return caller(via).get();
    }

    @GetMapping("/drive")
    public Map<String, Object> drive(@RequestParam(defaultValue = "rest") String via,
            @RequestParam(defaultValue = "20") int rate,
            @RequestParam(defaultValue = "5") double seconds) throws InterruptedException {
        if (rate < 1 || rate > MAX_RATE || seconds <= 0 || seconds > MAX_SECONDS) {
            throw new IllegalArgumentException(
                    "rate must be 1.." + MAX_RATE + " and seconds 0.." + MAX_SECONDS);
        }
        Supplier<Map<String, Object>> target = caller(via);
        stopDrives.set(false);
        long start = System.currentTimeMillis();
        long calls = Math.round(rate * seconds);
        long intervalNanos = 1_000_000_000L / rate;
        long startNanos = System.nanoTime();
        int successes = 0;
        List<String> failures = new ArrayList<>();
        Map<String, Integer> perInstance = new TreeMap<>();
        Long firstTraced = null;
        Long lastUntraced = null;
        int traced = 0;
        long i = 0;
        for (; i < calls && !stopDrives.get(); i++) {
            long due = startNanos + i * intervalNanos;
            long wait = due - System.nanoTime();
            if (wait > 0) {
                Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
            }
            try {
                Map<String, Object> answer = target.get();
                successes++;
                perInstance.merge(String.valueOf(answer.get("instanceId")), 1, Integer::sum);
                long now = System.currentTimeMillis();
                if (answer.get("traceparent") != null) {
                    traced++;
                    if (firstTraced == null) {
                        firstTraced = now;
                    }
                } else {
                    lastUntraced = now;
                }
            } catch (RuntimeException error) {
                failures.add(System.currentTimeMillis() + " " + error);
            }
        }
        Map<String, Object> report = new LinkedHashMap<>();
        report.put("via", via);
        report.put("startedAtMillis", start);
        report.put("endedAtMillis", System.currentTimeMillis());
        report.put("calls", i);
        report.put("successes", successes);
        report.put("failures", failures.size());
        report.put("failureSamples", failures.subList(0, Math.min(10, failures.size())));
        report.put("perInstance", perInstance);
        report.put("traced", traced);
        report.put("firstTracedAtMillis", firstTraced);
        report.put("lastUntracedAtMillis", lastUntraced);
        return report;
    }

    @PostMapping("/drive/stop")
    public Map<String, Object> stopDrives() {
        stopDrives.set(true);
        return Map.of("stopping", true);
    }

    @GetMapping("/peers/{service}")
    public List<Map<String, Object>> peers(@PathVariable String service) {
        return discoveryClient.getInstances(service).stream()
                .map(i -> Map.<String, Object>of("instanceId", String.valueOf(i.getInstanceId()),
                        "host", i.getHost(), "port", i.getPort(), "metadata", i.getMetadata()))
                .toList();
    }

    private Supplier<Map<String, Object>> caller(String via) {
        switch (via) {
            case "rest":
                return () -> restTemplate.getForObject("http://orders/whoami", Map.class);
            case "feign":
                return ordersClient::whoami;
            default:
                throw new IllegalArgumentException("via must be rest or feign");
        }
    }
}
