package dev.ferry.samples.checkout;

import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import com.netflix.appinfo.InstanceInfo;
import com.netflix.discovery.EurekaClient;
import com.netflix.discovery.shared.Application;
import com.netflix.discovery.shared.Applications;

import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RestController;

/**
 * What this app's Eureka client holds for an application, every instance included (the
 * DiscoveryClient behind {@code /peers} shows UP instances only): {@code GET /eureka-view/{app}}
 * answers the client's apps hashcode and, per instance, the fields the client decoded from the
 * server. The side-by-side tests compare it between the real Eureka Server and Ferry.
 */
@RestController
public class EurekaView {

    private final EurekaClient eurekaClient;

    public EurekaView(EurekaClient eurekaClient) {
        this.eurekaClient = eurekaClient;
    }

    @GetMapping("/eureka-view/{app}")
    public Map<String, Object> view(@PathVariable String app) {
        Applications applications = eurekaClient.getApplications();
        Application application = applications.getRegisteredApplications(app.toUpperCase());
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("appsHashCode", applications.getAppsHashCode());
        answer.put("instances", application == null ? List.of()
                : application.getInstancesAsIsFromEureka().stream()
                        .sorted(Comparator.comparing(InstanceInfo::getInstanceId))
                        .map(EurekaView::fields).toList());
        return answer;
    }

    private static Map<String, Object> fields(InstanceInfo instance) {
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("instanceId", instance.getInstanceId());
        fields.put("app", instance.getAppName());
        fields.put("appGroupName", instance.getAppGroupName());
        fields.put("hostName", instance.getHostName());
        fields.put("ipAddr", instance.getIPAddr());
        fields.put("port", instance.getPort());
        fields.put("portEnabled", instance.isPortEnabled(InstanceInfo.PortType.UNSECURE));
        fields.put("securePort", instance.getSecurePort());
        fields.put("securePortEnabled", instance.isPortEnabled(InstanceInfo.PortType.SECURE));
        fields.put("vipAddress", instance.getVIPAddress());
        fields.put("secureVipAddress", instance.getSecureVipAddress());
        fields.put("status", String.valueOf(instance.getStatus()));
        fields.put("overriddenStatus", String.valueOf(instance.getOverriddenStatus()));
        fields.put("metadata", new TreeMap<>(instance.getMetadata()));
        fields.put("homePageUrl", instance.getHomePageUrl());
        fields.put("statusPageUrl", instance.getStatusPageUrl());
        fields.put("healthCheckUrl", instance.getHealthCheckUrl());
        fields.put("secureHealthCheckUrl", instance.getSecureHealthCheckUrl());
        fields.put("countryId", instance.getCountryId());
        fields.put("dataCenter", String.valueOf(instance.getDataCenterInfo().getName()));
        fields.put("renewalIntervalInSecs", instance.getLeaseInfo().getRenewalIntervalInSecs());
        fields.put("durationInSecs", instance.getLeaseInfo().getDurationInSecs());
        fields.put("registrationTimestamp", instance.getLeaseInfo().getRegistrationTimestamp());
        fields.put("lastRenewalTimestamp", instance.getLeaseInfo().getRenewalTimestamp());
        fields.put("serviceUpTimestamp", instance.getLeaseInfo().getServiceUpTimestamp());
        fields.put("coordinatingDiscoveryServer", instance.isCoordinatingDiscoveryServer());
        fields.put("actionType", String.valueOf(instance.getActionType()));
        fields.put("lastUpdatedTimestamp", instance.getLastUpdatedTimestamp());
        fields.put("lastDirtyTimestamp", instance.getLastDirtyTimestamp());
        return fields;
    }
}
