package dev.ferry.samples.pricing;

import java.util.LinkedHashMap;
import java.util.Map;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.context.config.annotation.RefreshScope;
import org.springframework.core.env.Environment;
import org.springframework.stereotype.Component;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

/**
 * A stock Config Server client. {@code GET /message} shows a {@code @RefreshScope} value
 * (changed by {@code POST /actuator/refresh} after the repository changes);
 * {@code GET /property?key=...} any property as the app's Environment resolves it.
 */
@SpringBootApplication
@RestController
public class PricingApplication {

    /** Rebuilt on every refresh, so it shows the value the latest configuration holds. */
    @Component
    @RefreshScope
    public static class Message {
        private final String text;

        public Message(@Value("${pricing.message:none}") String text) {
            this.text = text;
        }

        public String text() {
            return text;
        }
    }

    private final Message message;
    private final Environment environment;

    public PricingApplication(Message message, Environment environment) {
        this.message = message;
        this.environment = environment;
    }

    public static void main(String[] args) {
        SpringApplication.run(PricingApplication.class, args);
    }

    @GetMapping("/message")
    public Map<String, Object> message() {
        return Map.of("message", message.text());
    }

    @GetMapping("/property")
    public Map<String, Object> property(@RequestParam String key) {
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("key", key);
        answer.put("value", environment.getProperty(key));
        return answer;
    }
}
