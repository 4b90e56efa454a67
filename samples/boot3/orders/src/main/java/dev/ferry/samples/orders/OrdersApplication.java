package dev.ferry.samples.orders;

import java.util.LinkedHashMap;
import java.util.Map;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.client.serviceregistry.Registration;
import org.springframework.core.env.Environment;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RequestHeader;
import org.springframework.web.bind.annotation.RestController;

/**
 * A stock Spring Cloud Eureka client. {@code GET /whoami} says which instance answered, and
 * echoes the trace headers it was sent (a caller's own tracing, or a proxy on the way, adds
 * them; nothing here adds any).
 */
@SpringBootApplication
@RestController
public class OrdersApplication {

    private final Registration registration;
    private final Environment environment;

    public OrdersApplication(Registration registration, Environment environment) {
        this.registration = registration;
        this.environment = environment;
    }

    public static void main(String[] args) {
        SpringApplication.run(OrdersApplication.class, args);
    }

    @GetMapping("/whoami")
    public Map<String, Object> whoami(
            @RequestHeader(name = "traceparent", required = false) String traceparent) {
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("instanceId", registration.getInstanceId());
        answer.put("serviceId", registration.getServiceId());
        answer.put("port", environment.getProperty("local.server.port", Integer.class));
        answer.put("traceparent", traceparent);
        return answer;
    }
}
