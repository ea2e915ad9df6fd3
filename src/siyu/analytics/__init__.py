"""数据分析: the ladder over time (stage transitions, funnel, cohorts, flows, churn), team performance,
WeCom member behaviour data and the metrics API."""
