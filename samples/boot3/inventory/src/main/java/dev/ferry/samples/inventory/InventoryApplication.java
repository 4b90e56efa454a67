package dev.ferry.samples.inventory;

import java.util.List;
import java.util.Map;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.cloud.context.config.annotation.RefreshScope;
import org.springframework.stereotype.Component;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RestController;

/**
 * A stock Spring Cloud Consul app: it registers with an HTTP check on /actuator/health, reads
 * configuration from Consul's KV store and watches it. {@code GET /message} shows a
 * {@code @RefreshScope} value; {@code GET /peers/{service}} what its DiscoveryClient sees.
 */
@SpringBootApplication
@RestController
public class InventoryApplication {

    /** Rebuilt on every refresh, so it shows the value the latest configuration holds. */
    @Component
    @RefreshScope
    public static class Message {
        private final String text;

        public Message(@Value("${inventory.message:none}") String text) {
            this.text = text;
        }

        public String text() {
            return text;
        }
    }

    private final Message message;
    private final DiscoveryClient discoveryClient;

    public InventoryApplication(Message message, DiscoveryClient discoveryClient) {
        this.message = message;
        this.discoveryClient = discoveryClient;
    }

    public static void main(String[] args) {
        SpringApplication.run(InventoryApplication.class, args);
    }

    @GetMapping("/message")
    public Map<String, Object> message() {
        return Map.of("message", message.text());
    }

    @GetMapping("/peers/{service}")
    public List<Map<String, Object>> peers(@PathVariable String service) {
        return discoveryClient.getInstances(service).stream()
                .map(i -> Map.<String, Object>of("instanceId", String.valueOf(i.getInstanceId()),
                        "host", i.getHost(), "port", i.getPort(), "metadata", i.getMetadata()))
                .toList();
    }
}
