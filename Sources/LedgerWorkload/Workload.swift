public enum Workload {}
