"""yiyun.demo"""
