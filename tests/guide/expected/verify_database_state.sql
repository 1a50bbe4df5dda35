-- Check that plans were created
SELECT name, display_name, price_monthly, price_yearly, is_active
FROM subscription_plans;

-- Check that features were created
SELECT sp.name, COUNT(pf.id) as feature_count
FROM subscription_plans sp
LEFT JOIN plan_features pf ON sp.id = pf.plan_id
GROUP BY sp.name;
